"""Tests of results table 3: cross-dataset semantic mDSC and the unseen-class rule (segsam.report.cross)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segsam.errors import DataError
from segsam.report import make_table3_with_figure
from segsam.report.cross import make_table3

# (modality, class_id, class_name, sem_dsc) per test mask. Classes 1 and 2 are in the training
# split; class 3 occurs only in the training dataset's test split, so it is unseen in training.
SEGSAM = {
    "kits23": [("ct", 1, "kidney", 0.8), ("ct", 1, "kidney", 0.6), ("ct", 3, "kidney_tumor", 0.0)],
    "btcv": [("ct", 3, "kidney_tumor", 0.5)],
    "amos": [("ct", 2, "spleen", 0.5), ("mr", 2, "spleen", 0.9)],
}
UNET = {
    "kits23": [("ct", 1, "kidney", 0.4), ("ct", 3, "kidney_tumor", 0.2)],
    "btcv": [("ct", 3, "kidney_tumor", 0.1)],
    "amos": [("ct", 2, "spleen", 0.3)],
}
BINARY_ONLY = {name: [(m, c, n, None) for m, c, n, _ in rows] for name, rows in SEGSAM.items()}


def _per_mask(method: str, prompt: str, masks: Sequence[tuple[str, int, str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "method": method,
                "prompt": prompt,
                "modality": modality,
                "case": f"case_{i}",
                "image": f"img_{i}.png",
                "mask": f"mask_{i}.png",
                "class_id": class_id,
                "class_name": name,
                "dsc": 0.9,
                "hd95_mm": 3.0 + i,
                "sem_dsc": float("nan") if sem is None else sem,
            }
            for i, (modality, class_id, name, sem) in enumerate(masks)
        ]
    )


def _run(
    tmp_path: Path, config: dict[str, Any], methods: dict[str, tuple[str, dict]], datasets: Sequence[str]
) -> dict[str, Path]:
    files: dict[str, list[Path]] = {d: [] for d in datasets}
    for method, (prompt, rows) in methods.items():
        for dataset in datasets:
            path = tmp_path / "cross" / dataset / method / "per_mask.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            _per_mask(method, prompt, rows[dataset]).to_parquet(path, index=False)
            files[dataset].append(path)
    train = tmp_path / "masks.parquet"
    pd.DataFrame({"class_id": [1, 2, 3], "split": ["train", "train", "test"]}).to_parquet(train, index=False)
    config["methods"] = list(methods)
    config["evaluate"]["bootstrap"] = 50
    out = {
        "csv": tmp_path / "results" / "table3.csv",
        "md": tmp_path / "results" / "table3.md",
        "png": tmp_path / "results" / "figures" / "table3.png",
    }
    # the per-case 3D view: one (case, class) pair per method and dataset
    per_case = {}
    for dataset in datasets:
        path = tmp_path / "cross" / dataset / "per_case.parquet"
        pd.DataFrame(
            [
                {
                    "method": "segsam",
                    "prompt": "box",
                    "case": "c1",
                    "modality": "ct",
                    "class_id": 1,
                    "class_name": "kidney",
                    "n_planes": 3,
                    "dsc_3d": 0.6,
                    "hd95_3d_mm": 7.25,
                }
            ]
        ).to_parquet(path, index=False)
        per_case[dataset] = [path]
    make_table3_with_figure(files, train, out["csv"], out["md"], out["png"], config=config, per_case_files=per_case)
    return out


def test_table3_scores_seen_classes_and_reports_the_unseen_ones(tmp_path: Path, config: dict[str, Any]) -> None:
    out = _run(
        tmp_path,
        config,
        {"ft_decoder": ("box", BINARY_ONLY), "segsam": ("box", SEGSAM), "unet": ("none", UNET)},
        ["kits23", "btcv", "amos"],
    )
    table = pd.read_csv(out["csv"])
    # the binary-only method has no semantic output: not a row of table 3
    assert list(zip(table["method"], table["prompt"])) == [("segsam", "box"), ("unet", "none")]
    seg = table.set_index("method").loc["segsam"]
    # KiTS23: the seen class 1 has mean 0.7; the unseen class 3 is left out of mDSC, kept in _all
    assert seg["kits23"] == pytest.approx(70.0)
    assert seg["kits23_all"] == pytest.approx(35.0)
    assert seg["unseen_kits23"] == "kidney_tumor"
    assert (seg["n_kits23"], seg["classes_kits23"]) == (2, 1)
    assert seg["kits23_lo"] <= seg["kits23"] <= seg["kits23_hi"]
    # AMOS: mean of the modality mDSCs (CT 0.5, MR 0.9), nothing unseen
    assert seg["amos"] == pytest.approx(70.0)
    assert seg["amos_all"] == pytest.approx(70.0)
    assert isinstance(seg["unseen_amos"], float) and math.isnan(seg["unseen_amos"])  # empty string reads back as NaN
    # BTCV here holds only the unseen class: no mDSC, 0 masks scored, the all-class score kept
    assert math.isnan(seg["btcv"]) and seg["n_btcv"] == 0 and seg["btcv_all"] == pytest.approx(50.0)
    # the paper's cells and our deltas (paper table 3: SEG-SAM box 74.18 / 71.54 / 68.33; nnU-Net 34.15 on KiTS23)
    assert (seg["paper_kits23"], seg["paper_btcv"], seg["paper_amos"]) == (74.18, 71.54, 68.33)
    assert seg["delta_kits23"] == pytest.approx(-4.18)
    assert seg["delta_amos"] == pytest.approx(1.67)
    unet = table.set_index("method").loc["unet"]
    assert unet["kits23"] == pytest.approx(40.0) and unet["kits23_all"] == pytest.approx(30.0)
    assert unet["paper_kits23"] == 34.15 and unet["delta_kits23"] == pytest.approx(5.85)

    md = out["md"].read_text(encoding="utf-8")
    assert "| Method | Prompt | KiTS23 | BTCV | AMOS |" in md
    assert "70.00 [" in md and "paper 74.18" in md and "all classes 35.00" in md
    assert "(n=2, 1 classes); all classes 35.00" in md  # the cell closes its count before the all-class score
    assert "no seen class" in md
    assert "- KiTS23: kidney_tumor" in md and "- AMOS: none" in md
    # every prompted method, semantic or not, has its binary DSC per dataset (0.9 per mask here) and HD95
    binary = md.split("## Binary DSC")[1].split("## HD95")[0]
    assert "| ft_decoder " in binary and "| segsam " in binary and "unet" not in binary and "90.00" in binary
    assert "HD95 (mm)" in md and "| ft_decoder " in md.split("## HD95")[1]
    volume = md.split("## 3D per case")[1]
    assert "| segsam " in volume and "60.00" in volume and "7.25" in volume and "| kits23 " in volume
    assert out["png"].stat().st_size > 1000


def test_table3_without_a_semantic_method_or_dataset_fails_without_output(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    with pytest.raises(DataError, match="no semantic prediction"):
        _run(tmp_path, config, {"ft_decoder": ("box", BINARY_ONLY)}, ["kits23"])
    assert not (tmp_path / "results" / "table3.csv").exists()
    with pytest.raises(DataError, match="cross.datasets"):
        make_table3({}, tmp_path / "masks.parquet", tmp_path / "t3.csv", tmp_path / "t3.md", config=config)
    assert not (tmp_path / "t3.csv").exists()
