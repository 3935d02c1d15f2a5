"""Tests of prompt simulation (segsam.train.prompts) and saved test prompts (segsam.evaluate.prompts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.data.prompts import mask_box
from segsam.errors import DataError
from segsam.evaluate.prompts import PROMPT_COLUMNS, make_test_prompts

EVALUATE = {"prompts": ["box", "point"], "seed": 0, "box_jitter_px": 0}


def _write_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))
    return str(path)


@pytest.fixture
def index(tmp_path: Path) -> pd.DataFrame:
    """A hand-made masks table: 2 test cases (3 masks) and 1 train case (2 masks)."""
    rows = []
    specs = [
        ("ct_a", "ct", "test", 1, "liver", (slice(2, 12), slice(3, 20))),
        ("ct_a", "ct", "test", 2, "spleen", (slice(14, 18), slice(22, 28))),
        ("mr_b", "mr", "test", 1, "liver", (slice(5, 7), slice(5, 25))),
        ("ct_c", "ct", "train", 1, "liver", (slice(0, 5), slice(0, 5))),
        ("ct_c", "ct", "train", 3, "kidney_right", (slice(10, 19), slice(10, 12))),
    ]
    for i, (case, modality, split, class_id, name, region) in enumerate(specs):
        image = _write_png(tmp_path / case / "images" / f"{modality}--demo--{case}--z_0000.png", np.full((20, 30), 100))
        mask = np.zeros((20, 30))
        mask[region] = 255
        rows.append(
            {
                "image": image,
                "mask": _write_png(
                    tmp_path / case / "masks" / f"{modality}--demo--{case}--z_0000--{class_id:04d}_{i:03d}.png", mask
                ),
                "dataset": "demo",
                "modality": modality,
                "case": case,
                "axis": "z",
                "slice": 0,
                "class_id": class_id,
                "class_name": name,
                "area_fraction": float((mask > 0).mean()),
                "spacing_mm": 0.8,
                "split": split,
            }
        )
    return pd.DataFrame(rows)


def _prompts(index: pd.DataFrame, folder: Path, **evaluate) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    index.to_parquet(folder / "masks.parquet", index=False)
    return make_test_prompts(
        folder / "masks.parquet", folder / "prompts.parquet", evaluate_cfg={**EVALUATE, **evaluate}
    )


def test_one_row_per_test_mask_and_prompt_type(index: pd.DataFrame, tmp_path: Path) -> None:
    prompts = _prompts(index, tmp_path / "run")
    assert list(prompts.columns) == PROMPT_COLUMNS
    assert pd.read_parquet(tmp_path / "run" / "prompts.parquet").equals(prompts)
    test_masks = set(index.loc[index["split"] == "test", "mask"])
    assert set(prompts["mask"]) == test_masks  # nothing from the train split
    assert len(prompts) == 2 * len(test_masks)
    assert (prompts.groupby("mask")["prompt"].apply(sorted) == [["box", "point"]] * len(test_masks)).all()


def test_prompt_coordinates_fit_their_mask(index: pd.DataFrame, tmp_path: Path) -> None:
    prompts = _prompts(index, tmp_path / "run")
    for row in prompts.itertuples():
        mask = sitk.GetArrayFromImage(sitk.ReadImage(row.mask)) > 0
        assert [row.x0, row.y0, row.x1, row.y1] == mask_box(mask).tolist()  # no jitter configured
        assert mask[int(row.py), int(row.px)]


def test_jittered_test_boxes_stay_inside(index: pd.DataFrame, tmp_path: Path) -> None:
    prompts = _prompts(index, tmp_path / "run", box_jitter_px=4)
    assert (prompts["x0"] >= 0).all() and (prompts["x1"] <= 29).all() and (prompts["x0"] <= prompts["x1"]).all()
    assert (prompts["y0"] >= 0).all() and (prompts["y1"] <= 19).all() and (prompts["y0"] <= prompts["y1"]).all()


def test_prompts_are_deterministic(index: pd.DataFrame, tmp_path: Path) -> None:
    first = _prompts(index, tmp_path / "one", box_jitter_px=4)
    again = _prompts(index, tmp_path / "two", box_jitter_px=4)
    pd.testing.assert_frame_equal(first, again)
    other_seed = _prompts(index, tmp_path / "three", box_jitter_px=4, seed=1)
    assert not first[["x0", "y0", "x1", "y1", "px", "py"]].equals(other_seed[["x0", "y0", "x1", "y1", "px", "py"]])


def test_prompts_of_a_mask_do_not_depend_on_the_other_masks(index: pd.DataFrame, tmp_path: Path) -> None:
    full = _prompts(index, tmp_path / "full", box_jitter_px=4).set_index(["mask", "prompt"])
    kept = index.drop(index=[0]).iloc[::-1]  # drop one test mask, reverse the order
    subset = _prompts(kept, tmp_path / "subset", box_jitter_px=4).set_index(["mask", "prompt"])
    assert len(subset) == len(full) - 2
    pd.testing.assert_frame_equal(subset.sort_index(), full.loc[subset.index].sort_index())


def test_empty_test_split_is_an_error(index: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="test split is empty"):
        _prompts(index.assign(split="train"), tmp_path / "run")
    assert not (tmp_path / "run" / "prompts.parquet").exists()
