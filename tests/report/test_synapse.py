"""PG-SAM's Synapse-style table (segsam.report.synapse): organ mapping, means, case bootstrap, empty paper cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segsam.config import load_config
from segsam.report.inputs import Bootstrap
from segsam.report.synapse import (
    PAPER_NOTE,
    SYNAPSE_ORGANS,
    CaseMatrix,
    case_draws,
    make_synapse_table,
    present_organs,
    synapse_markdown,
    synapse_rows,
    synapse_table,
)

BOOT = Bootstrap(n_boot=300, ci=0.95, seed=0)


def _per_case(method: str, prompt: str, values: dict[tuple[str, str], float], hd95: float = 5.0) -> pd.DataFrame:
    """Per-case rows: {(case, class name): 3D DSC}; every HD95 = ``hd95`` mm."""
    return pd.DataFrame(
        [
            {
                "method": method,
                "prompt": prompt,
                "case": case,
                "modality": "mr",
                "class_id": 1,
                "class_name": name,
                "n_planes": 3,
                "dsc_3d": dsc,
                "hd95_3d_mm": hd95,
            }
            for (case, name), dsc in values.items()
        ]
    )


# case c2 has no spleen; vertebrae is not a Synapse organ
PG = {("c1", "liver"): 0.9, ("c1", "spleen"): 0.8, ("c2", "liver"): 0.5, ("c1", "vertebrae"): 0.1}


def test_rows_are_the_methods_without_prompts_and_segsam_with_boxes() -> None:
    methods = ["medsam_lite", "segsam", "unet", "pg_sam", "sawd_pmt", "pg_sam_k1", "unetr"]
    assert synapse_rows(methods) == [
        ("segsam", "box"),
        ("unet", "none"),
        ("pg_sam", "none"),
        ("pg_sam_k1", "none"),
        ("unetr", "none"),
    ]


def test_organs_map_to_vocabulary_classes_and_only_present_ones_get_columns() -> None:
    assert list(SYNAPSE_ORGANS) == [
        "Aorta",
        "Gallbladder",
        "Kidney (L)",
        "Kidney (R)",
        "Liver",
        "Pancreas",
        "Spleen",
        "Stomach",
    ]
    frame = _per_case("pg_sam", "none", {("c1", "kidney_right"): 0.5, ("c1", "liver"): 0.5, ("c1", "spleen"): 0.5})
    assert present_organs(frame) == {"Kidney (R)": "kidney_right", "Liver": "liver", "Spleen": "spleen"}
    table = synapse_table(frame, [("pg_sam", "none")], BOOT)
    organ_columns = {c for c in table.columns if c.startswith("dsc_") and not c.endswith(("_lo", "_hi"))}
    assert organ_columns == {"dsc_kidney_right", "dsc_liver", "dsc_spleen"}  # no vertebrae, no absent organs


def test_organ_means_over_cases_and_the_mean_over_present_organs() -> None:
    table = synapse_table(_per_case("pg_sam", "none", PG), [("pg_sam", "none")], BOOT).iloc[0]
    assert table["dsc_liver"] == pytest.approx(70.0)  # (0.9 + 0.5) / 2 over the cases with a liver
    assert table["dsc_spleen"] == pytest.approx(80.0)  # c1 only
    assert table["mdsc"] == pytest.approx(75.0)  # mean of the organ means, not of the 3 rows (73.33)
    assert table["n_cases"] == 2 and table["mhd95"] == pytest.approx(5.0)
    assert table["mdsc_lo"] <= table["mdsc"] <= table["mdsc_hi"]


def test_hd95_leaves_out_cases_without_spacing() -> None:
    frame = _per_case("pg_sam", "none", {("c1", "liver"): 0.9, ("c2", "liver"): 0.5})
    frame.loc[1, "hd95_3d_mm"] = float("nan")
    frame.loc[0, "hd95_3d_mm"] = 7.0
    row = synapse_table(frame, [("pg_sam", "none")], BOOT).iloc[0]
    assert row["hd95_liver"] == pytest.approx(7.0) and row["dsc_liver"] == pytest.approx(70.0)


def test_the_bootstrap_resamples_cases_not_organs() -> None:
    """Case A scores 1 on both organs, case B 0: a resample of 2 cases can only average to 0, 1/2 or 1."""
    values = {("A", "liver"): 1.0, ("A", "spleen"): 1.0, ("B", "liver"): 0.0, ("B", "spleen"): 0.0}
    frame = _per_case("pg_sam", "none", values)
    matrix = CaseMatrix.of(frame, "dsc_3d", ["A", "B"], ["liver", "spleen"])
    draws = case_draws(2, BOOT)
    assert draws.shape == (300, 2)
    assert set(np.round(matrix.mean(draws), 6)) == {0.0, 0.5, 1.0}
    assert np.array_equal(draws, case_draws(2, BOOT))  # seeded


def test_differences_to_unet_are_paired_over_the_same_case_resamples() -> None:
    unet = {("c1", "liver"): 0.6, ("c2", "liver"): 0.2, ("c3", "liver"): 0.9, ("c1", "spleen"): 0.4}
    better = {key: value + 0.1 for key, value in unet.items()}
    frame = pd.concat([_per_case("unet", "none", unet), _per_case("pg_sam", "none", better)])
    table = synapse_table(frame, [("unet", "none"), ("pg_sam", "none")], BOOT).set_index("method")
    assert table.loc["pg_sam", "diff_mdsc_unet"] == pytest.approx(10.0)
    # paired: every resample shows the same 10-point gain, so the interval has no width
    assert table.loc["pg_sam", "diff_mdsc_unet_lo"] == pytest.approx(10.0)
    assert table.loc["pg_sam", "diff_mdsc_unet_hi"] == pytest.approx(10.0)
    assert math.isnan(table.loc["unet", "diff_mdsc_unet"])
    assert table.loc["pg_sam", "mdsc_hi"] - table.loc["pg_sam", "mdsc_lo"] > 1  # each row's own interval is wide


def test_the_switches_are_compared_with_pg_sam_and_the_u_net_over_the_same_resamples() -> None:
    pg_sam = {("c1", "liver"): 0.6, ("c2", "liver"): 0.2, ("c3", "liver"): 0.9, ("c1", "spleen"): 0.4}
    worse = {key: value - 0.05 for key, value in pg_sam.items()}
    unet = {key: value - 0.3 for key, value in pg_sam.items()}
    frame = pd.concat(
        [_per_case("pg_sam", "none", pg_sam), _per_case("pg_sam_k1", "none", worse), _per_case("unet", "none", unet)]
    )
    rows = [("pg_sam", "none"), ("pg_sam_k1", "none"), ("unet", "none")]
    table = synapse_table(frame, rows, BOOT).set_index("method")
    for cell in ("diff_mdsc_pg_sam", "diff_mdsc_pg_sam_lo", "diff_mdsc_pg_sam_hi"):
        assert table.loc["pg_sam_k1", cell] == pytest.approx(-5.0)
    assert table.loc["unet", "diff_mdsc_pg_sam"] == pytest.approx(-30.0)
    assert table.loc["pg_sam_k1", "diff_mdsc_unet"] == pytest.approx(25.0)
    assert math.isnan(table.loc["pg_sam", "diff_mdsc_pg_sam"])
    markdown = synapse_markdown(table.reset_index(), frame, "chaos_t2")
    assert "mDSC minus PG-SAM's" in markdown and "mDSC minus nnU-Net (2D)'s" in markdown
    assert "PG-SAM K=1 (none): -5.00 [-5.00, -5.00]" in markdown


def test_without_a_reference_row_there_is_no_difference_column() -> None:
    table = synapse_table(_per_case("pg_sam_k1", "none", PG), [("pg_sam_k1", "none")], BOOT)
    assert not [column for column in table.columns if column.startswith("diff_")]


def test_segsam_box_rows_only_and_the_paper_cells_stay_empty(tmp_path: Path) -> None:
    frames = [
        _per_case("segsam", "box", PG),
        _per_case("segsam", "point", {k: 0.0 for k in PG}),
        _per_case("pg_sam", "none", PG),
    ]
    files = []
    for i, frame in enumerate(frames):
        files.append(tmp_path / f"per_case_{i}.parquet")
        frame.to_parquet(files[-1])
    config = load_config()
    config["methods"] = ["medsam_lite", "segsam", "pg_sam"]
    config["evaluate"]["bootstrap"] = 50
    out = {ext: tmp_path / f"table_synapse.{ext}" for ext in ("csv", "md", "json")}
    table = make_synapse_table(files, out["csv"], out["md"], out["json"], config=config)
    assert list(zip(table["method"], table["prompt"])) == [("segsam", "box"), ("pg_sam", "none")]
    assert table.loc[0, "mdsc"] == pytest.approx(75.0)  # the box rows, not the point rows
    paper = [c for c in table.columns if c.startswith("paper_")]
    assert {"paper_mdsc", "paper_mhd95", "paper_dsc_liver", "paper_dsc_spleen"} <= set(paper)
    assert table[paper].isna().all().all()
    written = pd.read_csv(out["csv"])
    assert list(written["method"]) == ["segsam", "pg_sam"]
    markdown = out["md"].read_text(encoding="utf-8")
    assert PAPER_NOTE in markdown and "Organs absent from this dataset's classes: Aorta, Gallbladder" in markdown
    assert "| PG-SAM | none | 2 | 75.00 [" in markdown
    sidecar = json.loads(out["json"].read_text(encoding="utf-8"))
    assert sidecar["organs_present"] == ["Liver", "Spleen"] and sidecar["paper_cells"] == PAPER_NOTE
    assert sidecar["cases"] == ["c1", "c2"] and sidecar["bootstrap"]["unit"] == "case"
    assert sidecar["references"] == ["pg_sam"]


def test_a_dataset_without_synapse_organs_gives_an_empty_table() -> None:
    frame = _per_case("pg_sam", "none", {("c1", "vertebrae"): 0.5})
    table = synapse_table(frame, [("pg_sam", "none")], BOOT)
    assert table.empty and "method" in table.columns
