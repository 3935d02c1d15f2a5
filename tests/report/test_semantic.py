"""Tests of results table 5/7: SAM baselines before and after plugging in SAWD (segsam.report.semantic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segsam.report.semantic import make_semantic_tables

HEADER = [
    "baseline",
    "method",
    "row",
    "variant",
    "prompt",
    "dataset",
    "paper_dataset",
    "dsc",
    "mdsc",
    "paper_dsc",
    "paper_mdsc",
    "delta_dsc",
    "delta_mdsc",
    "gain_dsc",
    "paper_gain_dsc",
]
SECTION = "## Table 5/7: SAWD plugged into the SAM baselines (avg over modalities, %)"
# (modality, class_id, dsc, sem_dsc) per mask for box prompts; point prompts score 0.1 lower.
# Without SAWD: CT mean 0.75, MR 0.60 -> avg 67.50 %. With SAWD: CT 0.85, MR 0.70 -> avg 77.50 %;
# mDSC: CT = mean of class means (0.8, 0.4) = 0.6, MR 0.5 -> avg 55.00 %.
ORIG = [("ct", 1, 0.80, None), ("ct", 2, 0.70, None), ("mr", 1, 0.60, None)]
SAWD = [("ct", 1, 0.90, 0.80), ("ct", 2, 0.80, 0.40), ("mr", 1, 0.70, 0.50)]


def _per_mask(method: str, masks: Sequence[tuple[str, int, float, float | None]]) -> pd.DataFrame:
    rows = []
    for prompt, offset in (("box", 0.0), ("point", -0.1)):
        for i, (modality, class_id, dsc, sem) in enumerate(masks):
            case = f"{modality}_case_{i}"
            stem = f"{modality}--demo--{case}--z_{i:04d}"
            rows.append(
                {
                    "method": method,
                    "prompt": prompt,
                    "modality": modality,
                    "case": case,
                    "image": f"slices/{case}/images/{stem}.png",
                    "mask": f"slices/{case}/masks/{stem}--{class_id:04d}_000.png",
                    "class_id": class_id,
                    "dsc": dsc + offset,
                    "hd95_mm": 2.0,
                    "sem_dsc": float("nan") if sem is None else sem + offset,
                }
            )
    return pd.DataFrame(rows)


def _write(folder: Path, runs: dict[str, Sequence[tuple[str, int, float, float | None]]]) -> list[Path]:
    files = []
    for method, masks in runs.items():
        path = folder / method / "per_mask.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        _per_mask(method, masks).to_parquet(path, index=False)
        files.append(path)
    return files


def _run(
    tmp_path: Path,
    config: dict[str, Any],
    runs: dict[str, Sequence[tuple[str, int, float, float | None]]],
    cross: dict[str, dict[str, Sequence[tuple[str, int, float, float | None]]]] | None = None,
) -> dict[str, Path]:
    files = _write(tmp_path / "eval", runs)
    cross_files = {dataset: _write(tmp_path / "cross" / dataset, masks) for dataset, masks in (cross or {}).items()}
    config["cross"]["prompts"] = ["box", "point"]
    config["methods"] = list(runs)
    config["evaluate"]["bootstrap"] = 20
    out = {name: tmp_path / "results" / f"{name}.csv" for name in ("table2", "table4", "table5")}
    out["md"] = tmp_path / "results" / "tables_semantic.md"
    make_semantic_tables(
        files,
        out["table2"],
        out["table4"],
        out["md"],
        config=config,
        out_table5=out["table5"],
        cross_per_mask=cross_files,
    )
    return out


def _nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


@pytest.fixture
def medsam_tables(tmp_path: Path, config: dict[str, Any]) -> dict[str, Path]:
    # segsam has a semantic decoder but is not a SAM ViT-B baseline: no table 5 row
    return _run(tmp_path, config, {"segsam": SAWD, "medsam": ORIG, "medsam+sawd": SAWD})


def test_table5_rows_per_prompt_and_variant(medsam_tables: dict[str, Path]) -> None:
    table = pd.read_csv(medsam_tables["table5"])
    assert table.columns.tolist() == HEADER
    assert list(zip(table["method"], table["variant"], table["prompt"], strict=True)) == [
        ("medsam", "orig", "box"),
        ("medsam+sawd", "+SAWD", "box"),
        ("medsam", "orig", "point"),
        ("medsam+sawd", "+SAWD", "point"),
    ]
    assert (table["baseline"] == "medsam").all()
    assert table["row"].tolist() == ["MedSAM", "MedSAM + SAWD"] * 2
    # the training dataset's test split, set beside the paper's SA-Med2D column
    assert set(zip(table["dataset"], table["paper_dataset"])) == {("demo", "sa_med2d")}


def test_table5_values_beside_the_paper(medsam_tables: dict[str, Path]) -> None:
    table = pd.read_csv(medsam_tables["table5"]).set_index(["method", "prompt"])
    orig_box, sawd_box = table.loc[("medsam", "box")], table.loc[("medsam+sawd", "box")]
    orig_point, sawd_point = table.loc[("medsam", "point")], table.loc[("medsam+sawd", "point")]
    # ours: avg = mean of the modality means
    assert orig_box["dsc"] == pytest.approx(67.5) and sawd_box["dsc"] == pytest.approx(77.5)
    assert orig_point["dsc"] == pytest.approx(57.5) and sawd_point["dsc"] == pytest.approx(67.5)
    assert (
        _nan(orig_box["mdsc"]) and sawd_box["mdsc"] == pytest.approx(55.0) and sawd_point["mdsc"] == pytest.approx(45.0)
    )
    # the paper's SA-Med2D column (config/paper/table5_7_plugin.csv)
    assert orig_box["paper_dsc"] == 77.37 and sawd_box["paper_dsc"] == 78.83 and sawd_box["paper_mdsc"] == 74.78
    assert orig_point["paper_dsc"] == 66.25 and sawd_point["paper_dsc"] == 69.43 and sawd_point["paper_mdsc"] == 65.18
    assert _nan(orig_box["paper_mdsc"]) and _nan(orig_box["delta_mdsc"])
    assert orig_box["delta_dsc"] == pytest.approx(67.5 - 77.37) and sawd_box["delta_mdsc"] == pytest.approx(
        55.0 - 74.78
    )
    # SAWD's gain over the same baseline and prompt, ours and the paper's; none on orig rows
    assert sawd_box["gain_dsc"] == pytest.approx(10.0) and sawd_point["gain_dsc"] == pytest.approx(10.0)
    assert sawd_box["paper_gain_dsc"] == pytest.approx(1.46) and sawd_point["paper_gain_dsc"] == pytest.approx(3.18)
    assert _nan(orig_box["gain_dsc"]) and _nan(orig_box["paper_gain_dsc"])


def test_table5_markdown_section(medsam_tables: dict[str, Path]) -> None:
    text = medsam_tables["md"].read_text(encoding="utf-8")
    assert text.index("## Table 2") < text.index("## Table 4") < text.index(SECTION)
    section = text.split(SECTION)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 4  # head, rule, four rows
    assert "MedSAM + SAWD" in section and "77.50" in section and "78.83" in section and "74.78" in section
    assert "nan" not in section.lower()  # missing cells (orig rows' mDSC) print as "-"
    orig_box = next(line for line in lines if line.startswith("| MedSAM ") and "box" in line)
    assert orig_box.replace(" ", "").endswith("|-|-|-|")
    assert not [p for p in medsam_tables["table5"].parent.iterdir() if p.name.startswith(".")]  # no temporary files


def test_table5_family_with_one_variant_run(tmp_path: Path, config: dict[str, Any]) -> None:
    out = _run(tmp_path, config, {"med_sa+sawd": SAWD, "ft_sam": ORIG})
    table = pd.read_csv(out["table5"]).set_index(["method", "prompt"])
    # rows of both variants; baselines in the order FT-SAM, SAM-Med2D, MedSAM, Med-SA
    assert table.index.tolist() == [
        ("ft_sam", "box"),
        ("ft_sam+sawd", "box"),
        ("med_sa", "box"),
        ("med_sa+sawd", "box"),
        ("ft_sam", "point"),
        ("ft_sam+sawd", "point"),
        ("med_sa", "point"),
        ("med_sa+sawd", "point"),
    ]
    # the variant that was not run: no values of ours, the paper's cells all the same
    med_sa, plugged = table.loc[("med_sa", "box")], table.loc[("med_sa+sawd", "box")]
    assert _nan(med_sa["dsc"]) and med_sa["paper_dsc"] == 77.23
    assert plugged["dsc"] == pytest.approx(77.5) and plugged["paper_dsc"] == 78.42
    assert _nan(plugged["gain_dsc"]) and plugged["paper_gain_dsc"] == pytest.approx(1.19)
    # FT-SAM is not in the paper's table 5: no paper cells
    ft_sam = table.loc[[("ft_sam", "box"), ("ft_sam+sawd", "box")]]
    assert ft_sam[["paper_dsc", "paper_mdsc", "paper_gain_dsc", "delta_dsc"]].isna().all().all()
    assert table.loc[("ft_sam", "box"), "dsc"] == pytest.approx(67.5) and _nan(table.loc[("ft_sam+sawd", "box"), "dsc"])


def test_table5_without_any_baseline(tmp_path: Path, config: dict[str, Any]) -> None:
    out = _run(tmp_path, config, {"segsam": SAWD})
    assert out["table5"].read_text(encoding="utf-8").splitlines() == [",".join(HEADER)]
    text = out["md"].read_text(encoding="utf-8")
    assert text.split(SECTION)[1].strip() == "No SAM ViT-B baseline was run."
    assert len(pd.read_csv(out["table2"])) == 2  # the other tables are unchanged


def test_table5_rows_of_a_cross_dataset_beside_its_paper_column(tmp_path: Path, config: dict[str, Any]) -> None:
    # KiTS23 as a cross dataset: MedSAM scores 0.1 lower there than on the training dataset's test split
    lower = {
        name: [(m, c, d - 0.1, None if s is None else s - 0.1) for m, c, d, s in masks]
        for name, masks in (("medsam", ORIG), ("medsam+sawd", SAWD))
    }
    out = _run(tmp_path, config, {"medsam": ORIG, "medsam+sawd": SAWD}, cross={"kits23": lower})
    table = pd.read_csv(out["table5"])
    assert list(zip(table["dataset"], table["prompt"], table["method"])) == [
        ("demo", "box", "medsam"),
        ("demo", "box", "medsam+sawd"),
        ("demo", "point", "medsam"),
        ("demo", "point", "medsam+sawd"),
        ("kits23", "box", "medsam"),
        ("kits23", "box", "medsam+sawd"),
        ("kits23", "point", "medsam"),
        ("kits23", "point", "medsam+sawd"),
    ]
    kits = table[table["dataset"] == "kits23"].set_index(["method", "prompt"])
    assert (kits["paper_dataset"] == "kits23").all()
    orig, plugged = kits.loc[("medsam", "box")], kits.loc[("medsam+sawd", "box")]
    # ours on KiTS23, beside the paper's KiTS23 cells (MedSAM 85.56, + SAWD 86.75 DSC and 70.5 mDSC)
    assert (
        orig["dsc"] == pytest.approx(57.5)
        and plugged["dsc"] == pytest.approx(67.5)
        and plugged["mdsc"] == pytest.approx(45.0)
    )
    assert (orig["paper_dsc"], plugged["paper_dsc"], plugged["paper_mdsc"]) == (85.56, 86.75, 70.5)
    assert plugged["delta_mdsc"] == pytest.approx(45.0 - 70.5)
    assert plugged["gain_dsc"] == pytest.approx(10.0) and plugged["paper_gain_dsc"] == pytest.approx(86.75 - 85.56)
    section = out["md"].read_text(encoding="utf-8").split(SECTION)[1]
    assert "| kits23 " in section and "86.75" in section
