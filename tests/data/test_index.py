"""Tests of the dataset index and the case-level split (segsam.data.index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segsam.data.index import IMAGE_COLUMNS, build_index, split_cases
from segsam.data.phantoms import write_phantom_case
from segsam.data.slicing import MANIFEST, slice_case
from segsam.errors import DataError

REPO = Path(__file__).resolve().parents[2]
CASES = [("ct", 0), ("ct", 1), ("ct", 2), ("mr", 1000), ("mr", 1001)]


def _cases(n_ct: int, n_mr: int) -> pd.DataFrame:
    rows = [{"case": f"ct_{i:02d}", "modality": "ct"} for i in range(n_ct)]
    rows += [{"case": f"mr_{i:02d}", "modality": "mr"} for i in range(n_mr)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def slice_dirs(tmp_path_factory: pytest.TempPathFactory, default_config: dict[str, Any]) -> list[Path]:
    """Five small phantom cases (3 CT, 2 MR), sliced with large strides."""
    root = tmp_path_factory.mktemp("index")
    slicing = {**default_config["slicing"], "stride": {"x": 12, "y": 12, "z": 10}}
    folders = []
    for modality, seed in CASES:
        case = f"{modality}_phantom_{seed}"
        image, label = root / "raw" / f"{case}.nii.gz", root / "raw" / f"{case}_seg.nii.gz"
        write_phantom_case(image, label, modality, seed, (48, 40, 32), (8.0, 8.0, 10.0))
        folder = root / "slices" / case
        slice_case(
            image,
            label,
            folder,
            case=case,
            modality=modality,
            dataset="demo",
            vocabulary_csv=REPO / "config" / "vocabulary.csv",
            labelmap_json=REPO / "config" / "labelmaps" / "demo.json",
            slicing=slicing,
        )
        folders.append(folder)
    return folders


def test_split_is_deterministic_and_row_order_independent() -> None:
    cases = _cases(6, 5)
    first = split_cases(cases, 0.25, seed=3)
    assert split_cases(cases, 0.25, seed=3) == first
    assert split_cases(cases.sample(frac=1.0, random_state=1), 0.25, seed=3) == first
    assert set(first) == set(cases["case"])
    assert set(first.values()) == {"train", "test"}


def test_split_seed_changes_the_draw() -> None:
    cases = _cases(12, 0)
    draws = {tuple(sorted(c for c, s in split_cases(cases, 0.25, seed).items() if s == "test")) for seed in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize(
    ("n_ct", "n_mr", "fraction", "n_test_ct", "n_test_mr"),
    [
        (4, 4, 0.25, 1, 1),
        (8, 3, 0.5, 4, 2),  # round(1.5) = 2
        (2, 2, 0.01, 1, 1),  # at least one test case per modality
        (2, 3, 0.99, 1, 2),  # at least one train case per modality
        (1, 2, 0.5, 0, 1),  # a lone case trains
    ],
)
def test_split_is_per_modality_with_both_sides(
    n_ct: int, n_mr: int, fraction: float, n_test_ct: int, n_test_mr: int
) -> None:
    split = split_cases(_cases(n_ct, n_mr), fraction, seed=0)
    test = [case for case, side in split.items() if side == "test"]
    assert sum(c.startswith("ct_") for c in test) == n_test_ct
    assert sum(c.startswith("mr_") for c in test) == n_test_mr


def test_index_tables(slice_dirs: list[Path], tmp_path: Path) -> None:
    masks_out, images_out = tmp_path / "idx" / "masks.parquet", tmp_path / "idx" / "images.parquet"
    masks, images = build_index(slice_dirs, masks_out, images_out, test_fraction=0.5, seed=0)
    assert pd.read_parquet(masks_out).equals(masks)
    assert pd.read_parquet(images_out).equals(images)
    required = {
        "image",
        "mask",
        "dataset",
        "modality",
        "case",
        "axis",
        "slice",
        "class_id",
        "class_name",
        "area_fraction",
        "split",
    }
    assert required <= set(masks.columns)
    assert list(images.columns) == IMAGE_COLUMNS
    # every manifest row is in the index, with paths that resolve
    total = sum(len(pd.read_parquet(folder / MANIFEST)) for folder in slice_dirs)
    assert len(masks) == total
    assert masks["mask"].is_unique
    for row in masks.sample(n=10, random_state=0).itertuples():
        assert Path(row.mask).is_file() and Path(row.image).is_file()
        assert Path(row.mask).parent.parent == Path(row.image).parent.parent
    assert not list((tmp_path / "idx").glob(".*"))  # no temporary files left


def test_no_case_in_two_splits(slice_dirs: list[Path], tmp_path: Path) -> None:
    masks, images = build_index(slice_dirs, tmp_path / "m.parquet", tmp_path / "i.parquet", test_fraction=0.5, seed=0)
    assert (masks.groupby("case")["split"].nunique() == 1).all()
    assert (images.groupby("case")["split"].nunique() == 1).all()
    per_modality = masks.drop_duplicates("case").groupby("modality")["split"].agg(set)
    assert per_modality.to_dict() == {"ct": {"train", "test"}, "mr": {"train", "test"}}
    # the split of a case is the same for every axis
    assert (masks.groupby(["case", "axis"])["split"].first().groupby("case").nunique() == 1).all()


def test_images_table_counts_masks(slice_dirs: list[Path], tmp_path: Path) -> None:
    masks, images = build_index(slice_dirs, tmp_path / "m.parquet", tmp_path / "i.parquet", test_fraction=0.5, seed=0)
    assert images["image"].is_unique
    counts = masks.groupby("image").size()
    assert images.set_index("image")["n_masks"].sort_index().equals(counts.sort_index())
    assert images["n_masks"].sum() == len(masks)
    merged = images.merge(masks.drop_duplicates("image"), on="image", suffixes=("", "_mask"))
    for column in ("case", "modality", "axis", "slice", "height", "width", "split"):
        assert (merged[column] == merged[f"{column}_mask"]).all(), column


def test_index_is_deterministic(slice_dirs: list[Path], tmp_path: Path) -> None:
    first, _ = build_index(slice_dirs, tmp_path / "a.parquet", tmp_path / "b.parquet", test_fraction=0.5, seed=0)
    again, _ = build_index(
        list(reversed(slice_dirs)), tmp_path / "c.parquet", tmp_path / "d.parquet", test_fraction=0.5, seed=0
    )
    pd.testing.assert_frame_equal(first, again)


def test_missing_manifest(slice_dirs: list[Path], tmp_path: Path) -> None:
    unfinished = tmp_path / "slices" / "ct_phantom_9"
    unfinished.mkdir(parents=True)
    with pytest.raises(DataError) as info:
        build_index(
            [*slice_dirs, unfinished], tmp_path / "m.parquet", tmp_path / "i.parquet", test_fraction=0.5, seed=0
        )
    assert str(unfinished / MANIFEST) in str(info.value)
    assert not (tmp_path / "m.parquet").exists() and not (tmp_path / "i.parquet").exists()


def test_no_slice_dirs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no masks"):
        build_index([], tmp_path / "m.parquet", tmp_path / "i.parquet", test_fraction=0.5, seed=0)
