"""Paired gains resampled by case (segsam.report.paired)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segsam.evaluate.metrics import semantic_summarise, summarise
from segsam.report.inputs import Bootstrap
from segsam.report.paired import LADDER_STEPS, gains, pair, paired_gain

BOOT = Bootstrap(n_boot=400, ci=0.95, seed=0)


def _rows(method: str, case_dsc: dict[str, float], modality: str = "ct", n: int = 30, noise: float = 0.0) -> list:
    rng = np.random.default_rng(hash(method) % 2**32)
    rows = []
    for case, dsc in case_dsc.items():
        for k in range(n):
            rows.append(
                {
                    "method": method,
                    "prompt": "box",
                    "mask": f"{case}_{k}",
                    "case": case,
                    "modality": modality,
                    "class_id": 1 + k % 3,
                    "dsc": dsc + noise * rng.normal(),
                    "sem_dsc": dsc if k % 2 else 0.0,
                }
            )
    return rows


def test_the_interval_resamples_cases_not_masks() -> None:
    # case a gains 10 points on every one of its masks, case b gains nothing: with two cases the
    # difference is either 0, 5 or 10 points, whatever the number of masks
    per_mask = pd.DataFrame(_rows("new", {"a": 0.9, "b": 0.8}) + _rows("old", {"a": 0.8, "b": 0.8}))
    (row,) = gains(per_mask, {"new": "old"}, BOOT).to_dict(orient="records")
    assert row["gain"] == pytest.approx(5.0) and row["n_cases"] == 2 and row["n_pairs"] == 60
    assert row["gain_lo"] == pytest.approx(0.0) and row["gain_hi"] == pytest.approx(10.0)


def test_the_gain_is_the_difference_of_the_tables_statistics() -> None:
    per_mask = pd.DataFrame(
        _rows("new", {"a": 0.9, "b": 0.7, "c": 0.6}, noise=0.05)
        + _rows("new", {"m1": 0.5, "m2": 0.4}, modality="mr", noise=0.05)
        + _rows("old", {"a": 0.8, "b": 0.7, "c": 0.5}, noise=0.05)
        + _rows("old", {"m1": 0.5, "m2": 0.3}, modality="mr", noise=0.05)
    )
    binary = summarise(per_mask, 0, 0.95, 0).query("modality == 'avg'").set_index("method")["mean"]
    semantic = semantic_summarise(per_mask, 0, 0.95, 0).query("modality == 'avg'").set_index("method")["mean"]
    for column, table, per_class in (("dsc", binary, False), ("sem_dsc", semantic, True)):
        paired = pair(per_mask, "new", "old", "box", column)
        result = paired_gain(paired, BOOT, per_class)
        assert result["gain"] == pytest.approx(round(100 * (table["new"] - table["old"]), 2), abs=0.011)
        assert result["gain_lo"] <= result["gain"] <= result["gain_hi"]


def test_pairs_only_the_prompts_both_methods_scored() -> None:
    per_mask = pd.DataFrame(_rows("new", {"a": 0.9, "b": 0.8}) + _rows("old", {"a": 0.8}))
    paired = pair(per_mask, "new", "old", "box", "dsc")
    assert len(paired.a) == 30 and len(paired.case_rows) == 1
    assert gains(per_mask, {"new": "missing"}, BOOT).empty


def test_the_ladder_compares_each_rung_with_the_one_it_extends() -> None:
    assert LADDER_STEPS["t2vse"] == "sawd_unpmt" and LADDER_STEPS["sawd_sem"] == "sawd_pmt"
    assert LADDER_STEPS["sawd_pmt"] == "ft_decoder" and LADDER_STEPS["cmsa"] == "t2vse"
