"""Tests of the data stage's behaviour at paper scale: skipped empty cases, fixed splits, label
value checks, and the streamed (partitioned parquet) index.

Complements tests/data/test_{io,slicing,index}.py with the issue-3 changes:
``slice_case`` skips an empty label volume (summary.json), ``build_index`` reports
skipped cases and honours ``split.assign``, ``read_case`` refuses label values that
would wrap in the uint16 cast, and ``write_index_dataset`` / ``count_masks`` stream.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from segsam.data.index import (
    build_index,
    build_index_dataset,
    count_masks,
    split_cases,
    write_index_dataset,
)
from segsam.data.io import read_case
from segsam.data.slicing import MANIFEST, MASK_COLUMNS, SKIPPED_EMPTY, SUMMARY, slice_case
from segsam.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _pair(write_vol, folder: Path, label: np.ndarray, name: str) -> tuple[Path, Path]:
    image = np.linspace(-200, 300, label.size).reshape(label.shape).astype(np.int16)
    return write_vol(folder / f"{name}.nii.gz", image), write_vol(folder / f"{name}_seg.nii.gz", label)


def _slice(
    image: Path,
    label: Path,
    out: Path,
    slicing: dict[str, Any],
    case: str,
    modality: str = "ct",
    labelmap: str = "demo.json",
):
    return slice_case(
        image,
        label,
        out,
        case=case,
        modality=modality,
        dataset="demo",
        vocabulary_csv=REPO / "config" / "vocabulary.csv",
        labelmap_json=REPO / "config" / "labelmaps" / labelmap,
        slicing=slicing,
    )


@pytest.fixture
def small_slicing(slicing_cfg: dict[str, Any]) -> dict[str, Any]:
    slicing_cfg.update(axes=["z"], stride={"x": 1, "y": 1, "z": 5})
    return slicing_cfg


def _organ() -> np.ndarray:
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    return label


# --- empty label volumes: a warning and a skipped case, not an error -----------------------------------


@pytest.mark.parametrize("values", [{}, {2: True}], ids=["all-zero", "only-ignored-labels"])
def test_empty_label_volume_is_skipped_with_a_summary(write_vol, tmp_path: Path, small_slicing, values, caplog) -> None:
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    if values:
        label[:, 5:10, 5:10] = 2
    labelmap = tmp_path / "map.json"
    labelmap.write_text(json.dumps({"labels": {"1": "liver", "2": None}}), encoding="utf-8")
    image, seg = _pair(write_vol, tmp_path / "raw", label, "c1")
    out = tmp_path / "slices" / "c1"
    logger = logging.getLogger("segsam")
    propagate, logger.propagate = logger.propagate, True
    try:
        with caplog.at_level(logging.WARNING, logger="segsam.data.slicing"):
            manifest = _slice(image, seg, out, small_slicing, "c1", labelmap=str(labelmap))
    finally:
        logger.propagate = propagate
    assert manifest.empty and list(manifest.columns) == MASK_COLUMNS
    assert pd.read_parquet(out / MANIFEST).empty
    assert list((out / "images").iterdir()) == [] and list((out / "masks").iterdir()) == []
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["skipped"] == SKIPPED_EMPTY == "empty label volume" and summary["case"] == "c1"
    assert str(seg) in caplog.text and "skipped" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == ["c1"]  # no temp folder left


def test_slice_summary_counts_what_was_kept(write_vol, tmp_path: Path, small_slicing) -> None:
    image, seg = _pair(write_vol, tmp_path / "raw", _organ(), "c1")
    manifest = _slice(image, seg, tmp_path / "c1", small_slicing, "c1")
    summary = json.loads((tmp_path / "c1" / SUMMARY).read_text())
    assert summary == {
        "case": "c1",
        "dataset": "demo",
        "modality": "ct",
        "skipped": None,
        "n_slices": manifest["image"].nunique(),
        "n_masks": len(manifest),
    }
    assert summary["n_slices"] == 4


@pytest.fixture
def three_cases(write_vol, tmp_path: Path, small_slicing) -> list[Path]:
    """ct_a and mr_b with an organ, ct_empty with an empty label volume."""
    folders = []
    for case, modality, label in (
        ("ct_a", "ct", _organ()),
        ("ct_empty", "ct", np.zeros((20, 40, 40), np.uint8)),
        ("mr_b", "mr", _organ()),
    ):
        image, seg = _pair(write_vol, tmp_path / "raw", label, case)
        _slice(image, seg, tmp_path / "slices" / case, small_slicing, case, modality)
        folders.append(tmp_path / "slices" / case)
    return folders


def test_build_index_reports_skipped_cases(three_cases: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "index"
    masks, images = build_index(
        three_cases, out / "m.parquet", out / "i.parquet", test_fraction=0.5, seed=0, summary_out=out / "summary.json"
    )
    assert set(masks["case"]) == {"ct_a", "mr_b"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"ct_empty": "empty label volume"}
    assert summary["n_masks"] == len(masks) and summary["n_images"] == len(images)
    assert sum(s["masks"] for s in summary["splits"].values()) == len(masks)


def test_split_assign_fixes_named_cases(three_cases: list[Path], tmp_path: Path) -> None:
    masks, images = build_index(
        three_cases,
        tmp_path / "m.parquet",
        tmp_path / "i.parquet",
        test_fraction=0.5,
        seed=0,
        assign={"ct_a": "test", "mr_b": "train", "ct_empty": "test"},
    )
    assert dict(masks.drop_duplicates("case").set_index("case")["split"]) == {"ct_a": "test", "mr_b": "train"}
    assert images.groupby("case")["split"].nunique().max() == 1


def test_split_assign_with_an_unknown_case_is_an_error(three_cases: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split.assign names cases that are not in the index: \['nope'\]"):
        build_index(
            three_cases,
            tmp_path / "m.parquet",
            tmp_path / "i.parquet",
            test_fraction=0.5,
            seed=0,
            assign={"nope": "test"},
        )
    assert not (tmp_path / "m.parquet").exists()


def test_split_assign_rejects_other_splits() -> None:
    cases = pd.DataFrame({"case": ["a", "b"], "modality": ["ct", "ct"]})
    with pytest.raises(DataError, match="'train' or 'test'"):
        split_cases(cases, 0.5, 0, {"a": "validation"})


def test_split_assign_leaves_the_rest_to_the_draw() -> None:
    cases = pd.DataFrame({"case": [f"c{i}" for i in range(6)], "modality": ["ct"] * 6})
    split = split_cases(cases, 0.34, 0, {"c0": "test", "c1": "test"})
    assert split["c0"] == split["c1"] == "test"
    rest = [split[f"c{i}"] for i in range(2, 6)]
    assert rest.count("test") == 1 and rest.count("train") == 3  # round(0.34 * 4) = 1 of the 4 drawn


# --- label values the uint16 cast would wrap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "message"), [(-1, np.int16, "negative values"), (70000, np.int32, "exceed 65535")]
)
def test_label_values_that_would_wrap_are_refused(write_vol, tmp_path: Path, value: int, dtype, message: str) -> None:
    label = np.zeros((4, 8, 8), dtype=dtype)
    label[1, 2, 2] = value
    image = write_vol(tmp_path / "img.nii.gz", np.zeros((4, 8, 8), np.int16))
    seg = write_vol(tmp_path / "seg.nii.gz", label)
    with pytest.raises(DataError, match=message) as info:
        read_case(image, seg)
    assert str(seg) in str(info.value) and "\n" not in str(info.value)


# --- the streamed, partitioned index ------------------------------------------------------------------------


def _chunk(start: int, n: int, modality: str, dataset: str) -> pd.DataFrame:
    case = [f"{dataset}_{(start + i) // 50:05d}" for i in range(n)]
    return pd.DataFrame(
        {
            "image": [f"img/{i}.png" for i in range(start, start + n)],
            "mask": [f"m/{i}.png" for i in range(start, start + n)],
            "dataset": dataset,
            "modality": modality,
            "case": case,
            "axis": "z",
            "slice": np.arange(n) % 100,
            "class_id": (np.arange(n) % 3) + 1,
            "class_name": np.array(["liver", "spleen", "kidney_right"])[np.arange(n) % 3],
            "instance": 0,
            "area_fraction": 0.01,
            "height": 256,
            "width": 256,
            "spacing_mm": 1.0,
        }
    )


def test_index_dataset_streams_partitions_and_counts(tmp_path: Path) -> None:
    chunks = [_chunk(0, 600, "ct", "amos"), _chunk(600, 300, "mr", "amos"), _chunk(900, 300, "ct", "kits23")]
    cases = pd.concat([c[["case", "modality"]] for c in chunks]).drop_duplicates()
    splits = split_cases(cases, 0.25, 0)
    out = tmp_path / "index"
    assert write_index_dataset(iter(chunks), out, splits=splits, buffer_rows=128, max_open_files=2) == 1200
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == [
        "modality=ct/dataset=amos",
        "modality=ct/dataset=kits23",
        "modality=mr/dataset=amos",
    ]
    everything = pd.concat(chunks, ignore_index=True)
    everything["split"] = everything["case"].map(splits)
    expected = everything[(everything["modality"] == "ct") & (everything["class_name"] == "liver")][
        "split"
    ].value_counts()
    assert count_masks(out, modality="ct", class_name="liver") == {k: int(v) for k, v in sorted(expected.items())}
    assert sum(count_masks(out).values()) == 1200
    assert count_masks(out, dataset="kits23", by="class_name") == {"kidney_right": 100, "liver": 100, "spleen": 100}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # written atomically


def test_index_dataset_needs_a_split_for_every_case(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cases without a split"):
        write_index_dataset(iter([_chunk(0, 10, "ct", "amos")]), tmp_path / "index", splits={})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="no 'split' column"):
        write_index_dataset(iter([_chunk(0, 10, "ct", "amos")]), tmp_path / "index")


def test_count_masks_on_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="index dataset not found"):
        count_masks(tmp_path / "nope")


def test_index_dataset_from_slice_folders_matches_build_index(three_cases: list[Path], tmp_path: Path) -> None:
    masks, _ = build_index(three_cases, tmp_path / "m.parquet", tmp_path / "i.parquet", test_fraction=0.5, seed=3)
    assert build_index_dataset(three_cases, tmp_path / "ds", test_fraction=0.5, seed=3) == len(masks)
    streamed = count_masks(tmp_path / "ds", by="case")
    assert streamed == {k: int(v) for k, v in sorted(masks["case"].value_counts().items())}
    assert count_masks(tmp_path / "ds") == {k: int(v) for k, v in sorted(masks["split"].value_counts().items())}


# --- reorientation to LPS with fewer copies (segsam.data.io._to_lps) ---------------------------------------


@pytest.mark.parametrize(
    "direction",
    [
        (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS: returned as is
        (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS: the usual NIfTI case
        (1, 0, 0, 0, -1, 0, 0, 0, -1),
        (-1, 0, 0, 0, 1, 0, 0, 0, -1),
        (0, 1, 0, 1, 0, 0, 0, 0, -1),  # a permutation: DICOMOrient's path
    ],
)
def test_to_lps_matches_dicom_orient(direction) -> None:
    import SimpleITK as sitk

    from segsam.data.io import _to_lps

    array = np.random.default_rng(0).integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.3, 2.9))
    image.SetOrigin((10.0, -20.0, 33.0))
    image.SetDirection(tuple(float(v) for v in direction))
    ours, reference = _to_lps(image), sitk.DICOMOrient(image, "LPS")
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(reference))
    assert np.allclose(ours.GetOrigin(), reference.GetOrigin())
    assert np.allclose(ours.GetDirection(), reference.GetDirection())
    assert np.allclose(ours.GetSpacing(), reference.GetSpacing())
    corner = [n - 1 for n in ours.GetSize()]
    assert np.allclose(ours.TransformIndexToPhysicalPoint(corner), reference.TransformIndexToPhysicalPoint(corner))
