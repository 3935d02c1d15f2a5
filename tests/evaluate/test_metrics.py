"""Tests of the evaluation metrics (segsam.evaluate.metrics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segsam.evaluate.metrics import bootstrap_modality_means, dice_scores, distance_summary, hd95_mm, summarise


def _masks(*arrays: list[list[int]]) -> torch.Tensor:
    return torch.tensor(np.array(arrays, dtype=bool))


def test_identical_masks_score_one() -> None:
    mask = _masks([[0, 1, 1], [0, 1, 0]])
    assert dice_scores(mask, mask.clone()) == pytest.approx([1.0])


def test_disjoint_masks_score_zero() -> None:
    assert dice_scores(_masks([[1, 1, 0, 0]]), _masks([[0, 0, 1, 1]])) == pytest.approx([0.0])


def test_partial_overlap_by_hand() -> None:
    pred = np.zeros((8, 8), dtype=bool)
    target = np.zeros((8, 8), dtype=bool)
    pred[0:4, 0:4] = True  # 16 pixels
    target[2:4, 0:6] = True  # 12 pixels, 8 of them inside pred
    scores = dice_scores(torch.tensor(pred[None]), torch.tensor(target[None]))
    assert scores == pytest.approx([2 * 8 / (16 + 12)])
    assert scores.dtype == np.float64


def test_scores_are_per_mask() -> None:
    pred = _masks([[1, 1, 0, 0]], [[1, 0, 0, 0]], [[0, 0, 0, 0]])
    target = _masks([[1, 1, 0, 0]], [[1, 1, 0, 0]], [[0, 0, 1, 0]])
    assert dice_scores(pred, target) == pytest.approx([1.0, 2 / 3, 0.0])


def test_empty_ground_truth_rule() -> None:
    """Documented rule: empty GT + empty prediction = 1, empty GT + any prediction = 0."""
    empty = _masks([[0, 0], [0, 0]])
    some = _masks([[0, 1], [0, 0]])
    assert dice_scores(empty, empty.clone()) == pytest.approx([1.0])
    assert dice_scores(some, empty) == pytest.approx([0.0])
    assert dice_scores(empty, some) == pytest.approx([0.0])  # empty prediction of a real mask


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_scores(torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 4, 5, dtype=torch.bool))


def _per_mask() -> pd.DataFrame:
    """One method/prompt; CT has 4 masks (mean 0.9), MR has 1 mask (0.5)."""
    rows = [("ct", d) for d in (0.8, 0.9, 1.0, 0.9)] + [("mr", 0.5)]
    return pd.DataFrame([{"method": "ft_decoder", "prompt": "box", "modality": m, "dsc": d} for m, d in rows])


def test_summarise_avg_is_the_mean_of_modality_means() -> None:
    table = summarise(_per_mask(), n_boot=200, ci=0.95, seed=0).set_index("modality")
    assert list(table.columns) == ["method", "prompt", "mean", "low", "high", "n"]
    assert table.loc["ct", "mean"] == pytest.approx(0.9)
    assert table.loc["mr", "mean"] == pytest.approx(0.5)
    assert table.loc["avg", "mean"] == pytest.approx(0.7)  # not 4.1 / 5 = 0.82, the mean over masks
    assert table.loc["avg", "mean"] != pytest.approx(_per_mask()["dsc"].mean())
    assert table["n"].to_dict() == {"ct": 4, "mr": 1, "avg": 5}


def test_summarise_rows_per_method_and_prompt() -> None:
    frames = []
    for method, prompt, shift in (
        ("medsam_lite", "box", 0.0),
        ("medsam_lite", "point", -0.2),
        ("ft_decoder", "box", 0.05),
    ):
        frame = _per_mask().assign(method=method, prompt=prompt)
        frame["dsc"] = frame["dsc"] + shift
        frames.append(frame)
    table = summarise(pd.concat(frames, ignore_index=True), n_boot=0, ci=0.95, seed=0)
    assert len(table) == 3 * 3
    avg = table[table["modality"] == "avg"].set_index(["method", "prompt"])["mean"]
    assert avg[("medsam_lite", "box")] == pytest.approx(0.7)
    assert avg[("medsam_lite", "point")] == pytest.approx(0.5)
    assert avg[("ft_decoder", "box")] == pytest.approx(0.75)
    assert table["low"].isna().all() and table["high"].isna().all()  # n_boot = 0: no interval


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_data() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 1000):
        scores = np.clip(rng.normal(0.8, 0.1, size=n), 0, 1)
        mean, low, high = bootstrap_modality_means([scores], n_boot=500, ci=0.95, seed=1)
        assert mean == pytest.approx(scores.mean())
        assert low <= mean <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # ~ 1 / sqrt(n)


def test_bootstrap_is_seeded() -> None:
    groups = [np.array([0.2, 0.9, 0.5, 0.7]), np.array([0.1, 0.4])]
    first = bootstrap_modality_means(groups, n_boot=300, ci=0.9, seed=5)
    assert bootstrap_modality_means(groups, n_boot=300, ci=0.9, seed=5) == first
    assert first[0] == pytest.approx((0.575 + 0.25) / 2)
    assert first[1] <= first[0] <= first[2]


def test_bootstrap_of_constant_scores_has_zero_width() -> None:
    mean, low, high = bootstrap_modality_means([np.full(7, 0.6)], n_boot=100, ci=0.95, seed=0)
    assert mean == low == high == pytest.approx(0.6)


def test_bootstrap_of_nothing_is_nan() -> None:
    assert all(np.isnan(v) for v in bootstrap_modality_means([np.array([])], n_boot=10, ci=0.95, seed=0))


# --- HD95 ---------------------------------------------------------------------------------


def _square(top: int, left: int, side: int = 10, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_hd95_is_the_shift_in_mm_and_zero_for_identical_masks() -> None:
    target = _square(10, 10)
    pred = torch.tensor(np.stack([_square(12, 10), _square(12, 10), target]))
    truth = torch.tensor(np.stack([target, target, target]))
    # a 10 px square moved down by 2 px: its top and bottom rows are 2 px away (over 5% of the boundary)
    assert hd95_mm(pred, truth, [0.5, 2.0, 0.8]) == pytest.approx([1.0, 4.0, 0.0])


def test_hd95_of_an_empty_prediction_is_the_slice_diagonal_and_unknown_spacing_is_nan() -> None:
    target = torch.tensor(np.stack([_square(5, 5), _square(5, 5)]))
    pred = torch.tensor(np.stack([np.zeros((40, 50), dtype=bool), _square(5, 5)]))
    out = hd95_mm(pred, target, [0.5, float("nan")])
    assert out[0] == pytest.approx(0.5 * np.hypot(40, 50))
    assert np.isnan(out[1])


def test_hd95_refuses_an_empty_ground_truth_and_mismatched_inputs() -> None:
    empty = torch.zeros(1, 40, 50, dtype=torch.bool)
    with pytest.raises(ValueError, match="non-empty ground-truth"):
        hd95_mm(torch.tensor(_square(5, 5))[None], empty, [1.0])
    with pytest.raises(ValueError, match="do not match"):
        hd95_mm(empty, empty, [1.0, 1.0])


def test_distance_summary_medians_per_modality_and_undefined_counted() -> None:
    per_mask = pd.DataFrame(
        {
            "method": "m",
            "prompt": "box",
            "modality": ["ct", "ct", "ct", "mr", "mr"],
            "hd95_mm": [1.0, 3.0, float("nan"), 10.0, 20.0],
        }
    )
    table = distance_summary(per_mask).set_index("modality")
    assert (
        table.loc["ct", "median"] == pytest.approx(2.0)
        and table.loc["ct", "n"] == 2
        and table.loc["ct", "n_undefined"] == 1
    )
    assert table.loc["mr", "median"] == pytest.approx(15.0) and table.loc["mr", "mean"] == pytest.approx(15.0)
    # avg: mean of the modality medians, as for DSC
    assert (
        table.loc["avg", "median"] == pytest.approx(8.5)
        and table.loc["avg", "n"] == 4
        and table.loc["avg", "n_undefined"] == 1
    )
