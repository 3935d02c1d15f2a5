"""Tests of the per-case 3D metrics (segsam.evaluate.volume)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segsam.evaluate.volume import PER_CASE_COLUMNS, CaseVolumes, case_summary, hd95_3d_mm


def _square(shape: tuple[int, int] = (20, 20), rows: slice = slice(5, 11), cols: slice = slice(5, 11)) -> np.ndarray:
    plane = np.zeros(shape, dtype=bool)
    plane[rows, cols] = True
    return plane


def test_hd95_of_a_plane_moved_by_one_step_is_the_plane_spacing() -> None:
    truth = np.zeros((3, 20, 20), dtype=bool)
    pred = np.zeros_like(truth)
    truth[0], pred[1] = _square(), _square()
    # every surface voxel of one is exactly one plane (3 mm) from the other's
    assert hd95_3d_mm(pred, truth, (3.0, 0.8, 0.8)) == pytest.approx(3.0)
    assert hd95_3d_mm(truth, truth, (3.0, 0.8, 0.8)) == pytest.approx(0.0)


def test_hd95_of_an_empty_prediction_is_the_volume_diagonal_and_unknown_spacing_is_nan() -> None:
    truth = np.zeros((4, 10, 20), dtype=bool)
    truth[1, 2:5, 2:5] = True
    assert hd95_3d_mm(np.zeros_like(truth), truth, (2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(8**2 + 10**2 + 20**2))
    assert math.isnan(hd95_3d_mm(truth, truth, (float("nan"), 1.0, 1.0)))
    with pytest.raises(ValueError, match="non-empty ground truth"):
        hd95_3d_mm(truth, np.zeros_like(truth), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="differ in shape"):
        hd95_3d_mm(truth[:2], truth, (1.0, 1.0, 1.0))


def test_case_volumes_stack_the_sampled_planes_of_each_case_and_class() -> None:
    volumes = CaseVolumes("segsam")
    empty = np.zeros((20, 20), dtype=bool)
    # case a, class 1 (kidney): on planes 10 and 14 of a case sampled every 4 planes (10, 14, 22);
    # the prediction finds it on plane 10 only
    volumes.add("box", "a", "ct", 10, 1, "kidney", 0.5, _square(), _square())
    volumes.add("box", "a", "ct", 14, 1, "kidney", 0.5, empty, _square())
    # class 2 on plane 22: two objects (instances) of one class on one plane form one region
    left, right = _square(cols=slice(0, 4)), _square(cols=slice(12, 16))
    volumes.add("box", "a", "ct", 22, 2, "spleen", 0.5, left, left)
    volumes.add("box", "a", "ct", 22, 2, "spleen", 0.5, right, right)
    # case b: one plane, point prompts kept apart from box prompts; case a is scored first
    volumes.finish(keep="b")
    volumes.add("point", "b", "mr", 3, 1, "kidney", 0.5, _square(), _square())
    with pytest.raises(ValueError, match="case a was scored already"):
        volumes.add("box", "a", "ct", 26, 1, "kidney", 0.5, _square(), _square())
    table = volumes.table()
    assert table.columns.tolist() == PER_CASE_COLUMNS
    rows = table.set_index(["prompt", "case", "class_id"])
    kidney = rows.loc[("box", "a", 1)]
    assert kidney["n_planes"] == 2 and kidney["modality"] == "ct" and kidney["class_name"] == "kidney"
    assert kidney["dsc_3d"] == pytest.approx(2 * 36 / (36 + 72))
    # the missed plane is one sampled step (4 planes x 0.5 mm) from the found one
    assert kidney["hd95_3d_mm"] == pytest.approx(2.0)
    spleen = rows.loc[("box", "a", 2)]
    assert (
        spleen["n_planes"] == 1
        and spleen["dsc_3d"] == pytest.approx(1.0)
        and spleen["hd95_3d_mm"] == pytest.approx(0.0)
    )
    assert rows.loc[("point", "b", 1), "dsc_3d"] == pytest.approx(1.0)

    summary = case_summary(table).set_index(["method", "prompt"])
    assert summary.loc[("segsam", "box"), "n"] == 2
    assert summary.loc[("segsam", "box"), "dsc_3d"] == pytest.approx((2 * 36 / 108 + 1.0) / 2)
    assert summary.loc[("segsam", "box"), "hd95_3d_mm"] == pytest.approx(1.0)  # median of 2.0 and 0.0
    assert case_summary(table.iloc[0:0]).empty
