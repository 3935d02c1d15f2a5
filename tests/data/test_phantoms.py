"""Tests of the synthetic demo phantoms (segsam.data.phantoms)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from segsam.data import phantoms
from segsam.data.phantoms import PHANTOM_LABELS, make_phantom, phantom_case_ids, write_phantom_case

REPO = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2, 3, 4, 5)  # covers identity, both flips and the permuted direction
NAME_TO_ID = {name: label for label, name in PHANTOM_LABELS.items()}
NEIGHBOURS = (
    ("liver", "gallbladder"),
    ("liver", "inferior_vena_cava"),
    ("liver", "kidney_right"),
    ("stomach", "spleen"),
    ("pancreas", "spleen"),
)


@functools.cache
def _case(modality: str, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[float, ...]]]:
    image, label = make_phantom(modality, seed)
    geometry = {"spacing": image.GetSpacing(), "origin": image.GetOrigin(), "direction": image.GetDirection()}
    label_geometry = {"spacing": label.GetSpacing(), "origin": label.GetOrigin(), "direction": label.GetDirection()}
    assert geometry == label_geometry
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label), geometry


def _physical_centroid(mask: np.ndarray, geometry: dict[str, tuple[float, ...]]) -> np.ndarray:
    """Centroid of a (k, j, i) mask in LPS millimetres."""
    kji = np.argwhere(mask).mean(axis=0)
    ijk = kji[::-1]
    direction = np.asarray(geometry["direction"]).reshape(3, 3)
    return np.asarray(geometry["origin"]) + direction @ (np.asarray(geometry["spacing"]) * ijk)


def test_labels_match_demo_labelmap() -> None:
    config = json.loads((REPO / "config" / "labelmaps" / "demo.json").read_text())
    assert {int(k): v for k, v in config["labels"].items()} == PHANTOM_LABELS


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    first_image, first_label = make_phantom("ct", 3)
    image, label, geometry = _case("ct", 3)
    assert np.array_equal(sitk.GetArrayFromImage(first_image), image)
    assert np.array_equal(sitk.GetArrayFromImage(first_label), label)
    assert first_image.GetOrigin() == geometry["origin"]
    other_image, other_label, other_geometry = _case("ct", 4)
    assert not np.array_equal(label, other_label)
    assert not np.array_equal(image, other_image)
    assert other_geometry["origin"] != geometry["origin"]


# sha256 of the image and label arrays (C order, as sitk.GetArrayFromImage gives them) of two small
# phantoms, 48 x 40 x 32 voxels of 8 x 8 x 10 mm: (modality, seed) -> (image digest, label digest).
# The demo's numbers rest on these phantoms, so the drawing code may be reorganised only in ways that
# leave every voxel as it was (the same random draws in the same order, the same arithmetic).
PHANTOM_DIGESTS = {
    ("ct", 3): (
        "c709d510375d98d15c94e54c9e0ddce9a62ecccd756c1bfad8bf741eae4dfc70",
        "0d6aa7db1a922f800af776e52f062f64aa0c6e043094ba89da93d3586183cb91",
    ),
    ("mr", 2): (
        "6eb9483f3f961999fe2638aac7b75d59727895fff4cd2720a346fc9e2884776a",
        "8870d0f81f3e9503ad61108959f37991296f67dba97ba415602f0e432be75a01",
    ),
}


@pytest.mark.parametrize(("modality", "seed"), list(PHANTOM_DIGESTS))
def test_phantoms_match_their_stored_digests(modality: str, seed: int) -> None:
    image, label = make_phantom(modality, seed, (48, 40, 32), (8.0, 8.0, 10.0))
    digests = tuple(
        hashlib.sha256(np.ascontiguousarray(sitk.GetArrayFromImage(img)).tobytes()).hexdigest()
        for img in (image, label)
    )
    assert digests == PHANTOM_DIGESTS[(modality, seed)]


def test_geometry_is_shared_orthonormal_and_flipped_for_odd_seeds() -> None:
    for seed in SEEDS:
        image, label, geometry = _case("ct", seed)
        assert image.shape == label.shape == (64, 80, 96)
        assert geometry["spacing"] == (4.0, 4.0, 5.0)
        direction = np.asarray(geometry["direction"]).reshape(3, 3)
        np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-12)
        if seed % 2 == 0:
            assert np.array_equal(direction, np.eye(3))
        else:
            assert not np.allclose(direction, np.eye(3))
    odd_directions = {_case("ct", seed)[2]["direction"] for seed in (1, 3, 5)}
    assert len(odd_directions) == 3


def test_dtypes_per_modality() -> None:
    ct_image, ct_label, _ = _case("ct", 0)
    mr_image, mr_label, _ = _case("mr", 1)
    assert ct_image.dtype == np.int16 and ct_label.dtype == np.uint8
    assert mr_image.dtype == np.float32 and mr_label.dtype == np.uint8
    assert np.isfinite(mr_image).all() and mr_image.min() >= 0.0


def test_every_label_present_with_plausible_volume_fraction() -> None:
    for seed in SEEDS:
        _, label, _ = _case("ct", seed)
        assert set(np.unique(label)) == {0, *PHANTOM_LABELS}
        fractions = {name: float((label == k).mean()) for k, name in PHANTOM_LABELS.items()}
        for name, fraction in fractions.items():
            assert 3e-4 < fraction < 0.1, (seed, name, fraction)
        assert max(fractions, key=fractions.get) == "liver"
        assert fractions["gallbladder"] < fractions["spleen"] < fractions["liver"]


def test_anatomy_sits_on_the_right_side_in_patient_coordinates() -> None:
    for seed in SEEDS:
        _, label, geometry = _case("ct", seed)
        c = {name: _physical_centroid(label == k, geometry) for k, name in PHANTOM_LABELS.items()}
        # LPS: +x is patient left, +y posterior, +z superior; holds whatever the direction matrix.
        assert c["liver"][0] < c["vertebrae"][0] < c["spleen"][0]
        assert c["kidney_right"][0] < c["vertebrae"][0] < c["kidney_left"][0]
        assert c["inferior_vena_cava"][0] < c["aorta"][0]
        assert c["aorta"][1] < c["vertebrae"][1]
        assert c["stomach"][1] < c["spleen"][1]
        assert c["kidney_right"][2] < c["liver"][2]


def test_documented_neighbours_touch() -> None:
    for seed in SEEDS:
        _, label, _ = _case("ct", seed)
        for a, b in NEIGHBOURS:
            grown = ndimage.binary_dilation(label == NAME_TO_ID[a])
            assert (grown & (label == NAME_TO_ID[b])).any(), (seed, a, b)


def test_ct_intensities_are_plausible_and_neighbours_look_alike() -> None:
    for seed in SEEDS:
        image, label, _ = _case("ct", seed)
        mean = {name: float(image[label == k].mean()) for k, name in PHANTOM_LABELS.items()}
        assert 40.0 <= mean["liver"] <= 80.0, (seed, mean)
        assert 20.0 <= mean["spleen"] <= 110.0, (seed, mean)  # a thin organ: partial volume with fat
        assert abs(mean["liver"] - mean["spleen"]) < 30.0, (seed, mean)
        assert 15.0 <= mean["pancreas"] <= 120.0, (seed, mean)
        assert 10.0 <= mean["kidney_right"] <= 200.0 and 10.0 <= mean["kidney_left"] <= 200.0, (seed, mean)
        assert -20.0 <= mean["gallbladder"] <= 35.0, (seed, mean)
        assert 10.0 <= mean["aorta"] <= 260.0 and 10.0 <= mean["inferior_vena_cava"] <= 200.0, (seed, mean)
        assert mean["vertebrae"] > 200.0, (seed, mean)
        assert mean["gallbladder"] < mean["liver"]
        assert image[0, 0, 0] < -900  # air outside the body
        noise = image[:, :4, :4].astype(float)  # air corner: acquisition noise only
        assert 5.0 < noise.std() < 30.0


def test_mr_intensities_follow_t2_contrast() -> None:
    for seed in (0, 1):
        image, label, _ = _case("mr", seed)
        mean = {name: float(image[label == k].mean()) for k, name in PHANTOM_LABELS.items()}
        assert mean["gallbladder"] > mean["spleen"] > mean["liver"]
        assert mean["kidney_left"] > mean["liver"]
        ct_label = _case("ct", seed)[1]
        assert np.array_equal(label, ct_label)  # same seed: same anatomy, other modality


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "cases"
    image_path, label_path = out / "ct_phantom_001.nii.gz", out / "labels" / "ct_phantom_001.nii.gz"
    write_phantom_case(image_path, label_path, "ct", 5, (96, 80, 64), (4.0, 4.0, 5.0))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "ct_phantom_001.nii.gz",
        "labels/ct_phantom_001.nii.gz",
    ]
    expected_image, expected_label, geometry = _case("ct", 5)
    for path, expected in ((image_path, expected_image), (label_path, expected_label)):
        read = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(read)
        assert array.dtype == expected.dtype
        assert np.array_equal(array, expected)
        np.testing.assert_allclose(read.GetSpacing(), geometry["spacing"], atol=1e-6)
        np.testing.assert_allclose(read.GetOrigin(), geometry["origin"], atol=1e-4)
        np.testing.assert_allclose(read.GetDirection(), geometry["direction"], atol=1e-6)


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_write(image: sitk.Image, path: str, useCompression: bool) -> None:  # noqa: N803
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(phantoms.sitk, "WriteImage", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_phantom_case(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", "mr", 0, (32, 32, 16), (8.0, 8.0, 10.0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"modality": "pet"}, "modality"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"spacing_mm": (0.0, 4.0, 5.0)}, "spacing_mm"),
        ({"spacing_mm": (4.0, -1.0, 5.0)}, "spacing_mm"),
        ({"shape_xyz": (8, 80, 64)}, "shape_xyz"),
        ({"shape_xyz": (96, 80)}, "shape_xyz"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict[str, object], argument: str) -> None:
    args: dict[str, object] = {"modality": "ct", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=argument):
        make_phantom(**args)  # type: ignore[arg-type]


def test_write_rejects_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_path"):
        write_phantom_case(tmp_path / "a.nii", tmp_path / "b.nii.gz", "ct", 0)
    with pytest.raises(ValueError, match="must differ"):
        write_phantom_case(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz", "ct", 0)
    assert list(tmp_path.iterdir()) == []


def test_small_custom_geometry_still_has_every_organ() -> None:
    image, label = make_phantom("mr", 2, shape_xyz=(48, 40, 32), spacing_mm=(8.0, 8.0, 10.0))
    assert image.GetSize() == (48, 40, 32) and image.GetSpacing() == (8.0, 8.0, 10.0)
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, *PHANTOM_LABELS}


def test_case_ids_alternate_modalities_with_distinct_seeds() -> None:
    cases = phantom_case_ids(6, ["ct", "mr"])
    assert [c[0] for c in cases] == [
        "ct_phantom_000",
        "mr_phantom_001",
        "ct_phantom_002",
        "mr_phantom_003",
        "ct_phantom_004",
        "mr_phantom_005",
    ]
    assert [c[1] for c in cases] == ["ct", "mr"] * 3
    seeds = [c[2] for c in cases]
    assert len(set(seeds)) == len(seeds)
    for modality in ("ct", "mr"):
        parities = {seed % 2 for _, m, seed in cases if m == modality}
        assert parities == {0, 1}
    assert phantom_case_ids(6, ["ct", "mr"]) == cases
    assert [c[1] for c in phantom_case_ids(3, ["mr"])] == ["mr"] * 3


@pytest.mark.parametrize(
    ("n_cases", "modalities", "argument"),
    [
        (0, ["ct"], "n_cases"),
        (2, [], "modalities"),
        (2, ["ct", "pet"], "modalities"),
        (2, ["ct", "ct"], "modalities"),
    ],
)
def test_case_ids_reject_bad_arguments(n_cases: int, modalities: list[str], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        phantom_case_ids(n_cases, modalities)
