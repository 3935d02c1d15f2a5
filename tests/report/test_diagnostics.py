"""Confusion matrices and the per-class and per-case tables (segsam.report.diagnostics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segsam.report.diagnostics import case_grid, confusion, make_diagnostics, per_case, per_class


def _per_mask() -> pd.DataFrame:
    rows = []
    # SEG-SAM names 3 of 4 left kidneys right (one called right kidney) and both spleens right
    for k, (true, predicted) in enumerate([(5, 5), (5, 5), (5, 5), (5, 4), (3, 3), (3, 3)]):
        for prompt in ("box", "point"):
            rows.append(
                {
                    "method": "segsam",
                    "prompt": prompt,
                    "mask": f"m{k}",
                    "case": "c2" if k == 3 else "c1",  # the misnamed left kidney is case c2's only mask
                    "modality": "mr",
                    "class_id": true,
                    "class_name": {5: "kidney_left", 3: "spleen"}[true],
                    "pred_class_id": predicted,
                    "dsc": 0.8,
                    "sem_dsc": 0.8 if true == predicted else 0.0,
                }
            )
            rows.append(rows[-1] | {"method": "medsam_lite", "pred_class_id": -1, "sem_dsc": float("nan")})
    return pd.DataFrame(rows)


def test_confusion_counts_only_methods_that_name_classes() -> None:
    counts = confusion(_per_mask())
    assert set(counts["method"]) == {"segsam"}
    box = counts[counts["prompt"] == "box"].set_index(["class_id", "pred_class_id"])["count"]
    assert box[(5, 5)] == 3 and box[(5, 4)] == 1 and box[(3, 3)] == 2 and box.sum() == 6


def test_per_class_table() -> None:
    table = per_class(_per_mask()).set_index(["method", "prompt", "class_name"])
    left = table.loc[("segsam", "box", "kidney_left")]
    assert left["n"] == 4 and left["class_acc"] == pytest.approx(75.0) and left["sem_dsc"] == pytest.approx(60.0)
    assert pd.isna(table.loc[("medsam_lite", "box", "kidney_left"), "class_acc"])  # no class head: no accuracy


def test_per_case_table_finds_the_case_a_class_fails_in() -> None:
    table = per_case(_per_mask())
    assert list(table["method"].unique()) == ["segsam", "medsam_lite"]  # the evaluated order, not alphabetical
    box = table[(table["method"] == "segsam") & (table["prompt"] == "box")].set_index(["case", "class_name"])
    assert (
        box.loc[("c1", "kidney_left"), "class_acc"] == pytest.approx(100.0) and box.loc[("c1", "kidney_left"), "n"] == 3
    )
    assert (
        box.loc[("c2", "kidney_left"), "class_acc"] == pytest.approx(0.0) and box.loc[("c2", "kidney_left"), "n"] == 1
    )
    assert ("c2", "spleen") not in box.index  # no spleen in c2: no row
    grid = case_grid(table).set_index(["method", "prompt", "case"])
    assert set(grid.index.get_level_values("method")) == {"segsam"}  # medsam_lite names no class
    assert grid.loc[("segsam", "box", "c2"), "kidney_left"] == pytest.approx(0.0)
    assert pd.isna(grid.loc[("segsam", "box", "c2"), "spleen"])


def test_make_diagnostics_writes_every_output(tmp_path: Path, config: dict[str, Any]) -> None:
    files = []
    for method, frame in _per_mask().groupby("method"):
        path = tmp_path / f"{method}.parquet"
        frame.to_parquet(path)
        files.append(path)
    names = ("confusion.csv", "per_class.csv", "per_case.csv", "per_class.md", "confusion.png")
    outs = [tmp_path / "out" / name for name in names]
    make_diagnostics(files, *outs, config=config)
    assert pd.read_csv(outs[0])["count"].sum() == 12
    assert set(pd.read_csv(outs[2])["case"]) == {"c1", "c2"}
    markdown = outs[3].read_text(encoding="utf-8")
    assert "kidney_left" in markdown and "## Class named right per test case (%)" in markdown
    assert outs[4].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
