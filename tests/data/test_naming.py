"""Tests of SA-Med2D slice and mask names (segsam.data.naming)."""

from __future__ import annotations

import pytest

from segsam.data.naming import AXES, SliceName, parse_mask_stem


def test_image_and_mask_names_follow_sa_med2d() -> None:
    name = SliceName("ct", "demo", "case_1", "z", 7)
    assert name.stem == "ct--demo--case_1--z_0007"
    assert name.image_file == "ct--demo--case_1--z_0007.png"
    assert name.mask_file(3, 1) == "ct--demo--case_1--z_0007--0003_001.png"
    assert name.mask_file(1234, 999) == "ct--demo--case_1--z_0007--1234_999.png"


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("index", [0, 42, 9999])
def test_image_name_round_trip(axis: str, index: int) -> None:
    name = SliceName("mr", "totalseg.v2", "s0011", axis, index)
    assert SliceName.parse(name.stem) == name


def test_mask_name_round_trip() -> None:
    name = SliceName("ct", "amos", "amos_0013", "y", 120)
    stem = name.mask_file(14, 2).removesuffix(".png")
    assert parse_mask_stem(stem) == (name, 14, 2)


def test_parse_real_sa_med2d_style_stem() -> None:
    parsed, class_id, instance = parse_mask_stem("mr_t1--brats.2021--BraTS_00012--x_0088--0005_000")
    assert (parsed.modality, parsed.dataset, parsed.case, parsed.axis, parsed.slice) == (
        "mr_t1",
        "brats.2021",
        "BraTS_00012",
        "x",
        88,
    )
    assert (class_id, instance) == (5, 0)


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        (("c-t", "demo", "case", "z", 1), "modality"),
        (("ct", "de mo", "case", "z", 1), "dataset"),
        (("ct", "demo", "case--1", "z", 1), "case"),
        (("ct", "demo", "", "z", 1), "case"),
        (("ct", "demo", "case", "w", 1), "axis"),
        (("ct", "demo", "case", "Z", 1), "axis"),
        (("ct", "demo", "case", "z", -1), "slice"),
        (("ct", "demo", "case", "z", 10000), "slice"),
    ],
)
def test_bad_fields_are_rejected(fields: tuple, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SliceName(*fields)


@pytest.mark.parametrize(("class_id", "instance"), [(-1, 0), (10000, 0), (1, -1), (1, 1000)])
def test_mask_ids_out_of_range(class_id: int, instance: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        SliceName("ct", "demo", "case", "z", 1).mask_file(class_id, instance)


@pytest.mark.parametrize(
    "stem",
    [
        "ct--demo--case--z_7",  # slice not zero-padded to 4 digits
        "ct--demo--case--z_00007",
        "ct--demo--case--q_0007",
        "ct--demo--z_0007",  # a field missing
        "ct--demo--case--z_0007.png",  # a file name, not a stem
        "ct--demo--case--z_0007--0001_001",  # a mask stem is not an image stem
    ],
)
def test_parse_rejects_bad_image_stems(stem: str) -> None:
    with pytest.raises(ValueError, match="SA-Med2D image name"):
        SliceName.parse(stem)


@pytest.mark.parametrize(
    "stem",
    [
        "ct--demo--case--z_0007",  # no class/instance part
        "ct--demo--case--z_0007--1_001",
        "ct--demo--case--z_0007--0001_01",
    ],
)
def test_parse_rejects_bad_mask_stems(stem: str) -> None:
    with pytest.raises(ValueError, match="SA-Med2D mask name"):
        parse_mask_stem(stem)


def test_parse_mask_stem_rejects_bad_image_part() -> None:
    with pytest.raises(ValueError, match="SA-Med2D image name"):
        parse_mask_stem("ct--demo--z_0007--0001_001")
