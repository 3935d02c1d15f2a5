"""Tests of results table 1 and its figure (segsam.report, segsam.report.table1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.config import config_hash
from segsam.errors import ConfigError
from segsam.methods import METHODS
from segsam.report import make_table1_with_figure
from segsam.report.table1 import binary_table

# masks per modality differ (5 CT, 2 MR), so avg (mean of modality means) != mean over masks
CT_DSC = [0.95, 0.90, 0.85, 0.92, 0.88]
MR_DSC = [0.70, 0.60]


def _per_mask(method: str, offset: float) -> pd.DataFrame:
    rows = []
    for prompt, prompt_offset in (("box", 0.0), ("point", -0.2)):
        for modality, scores in (("ct", CT_DSC), ("mr", MR_DSC)):
            for i, dsc in enumerate(scores):
                case = f"{modality}_case_{i % 2}"
                stem = f"{modality}--demo--{case}--z_{i:04d}"
                rows.append(
                    {
                        "method": method,
                        "prompt": prompt,
                        "modality": modality,
                        "case": case,
                        "image": f"slices/{case}/images/{stem}.png",
                        "mask": f"slices/{case}/masks/{stem}--0001_000.png",
                        "class_id": 1,
                        "dsc": min(1.0, max(0.0, dsc + offset + prompt_offset)),
                        # one CT mask of unknown spacing: HD95 undefined
                        "hd95_mm": float("nan") if (modality, i) == ("ct", 4) else 10 * (1 - dsc) - offset,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def outputs(tmp_path: Path, config: dict[str, Any]) -> tuple[dict[str, Path], dict[str, Any]]:
    assert set(config["methods"]) <= set(METHODS)
    files = []
    weights = {"encoder": "tiny_vit", "weights": config["encoder"]["weights"], "sha256": config["encoder"]["sha256"]}
    for i, method in enumerate(config["methods"]):
        path = tmp_path / "eval" / method / "per_mask.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        _per_mask(method, offset=-0.05 * i).to_parquet(path, index=False)
        (path.parent / "summary.json").write_text(json.dumps({"method": method, "weights": weights}))
        files.append(path)
    out = {ext: tmp_path / "results" / f"table1.{ext}" for ext in ("csv", "md", "json", "png")}
    config["evaluate"]["bootstrap"] = 200
    make_table1_with_figure(files, out["csv"], out["md"], out["json"], out["png"], config=config)
    return out, config


def test_csv_has_a_row_per_method_and_prompt(outputs) -> None:
    out, config = outputs
    table = pd.read_csv(out["csv"])
    expected = [(m, p) for p in config["evaluate"]["prompts"] for m in config["methods"]]
    assert list(zip(table["method"], table["prompt"], strict=True)) == expected
    assert table["row"].tolist() == [METHODS[m].display for m, _ in expected]
    for column in ("ct", "mr", "avg", "n_ct", "n_mr", "n_avg", "ct_lo", "ct_hi", "avg_lo", "avg_hi"):
        assert column in table.columns, column
    assert "pet" not in table.columns  # only modalities present


def test_csv_values(outputs) -> None:
    out, _ = outputs
    table = pd.read_csv(out["csv"])
    assert (table["n_ct"] == len(CT_DSC)).all() and (table["n_mr"] == len(MR_DSC)).all()
    assert (table["n_avg"] == len(CT_DSC) + len(MR_DSC)).all()
    first = table.iloc[0]  # the first method, box prompts, no offset
    assert first["ct"] == pytest.approx(100 * np.mean(CT_DSC), abs=0.01)
    assert first["mr"] == pytest.approx(100 * np.mean(MR_DSC), abs=0.01)
    # avg is the mean of the modality columns (within rounding), not the mean over masks
    assert np.allclose(table["avg"], table[["ct", "mr"]].mean(axis=1), atol=0.011)
    assert first["avg"] != pytest.approx(100 * np.mean(CT_DSC + MR_DSC), abs=0.5)
    for m in ("ct", "mr", "avg"):
        assert (table[f"{m}_lo"] <= table[m]).all() and (table[m] <= table[f"{m}_hi"]).all()


def test_markdown(outputs) -> None:
    out, config = outputs
    text = out["md"].read_text(encoding="utf-8")
    dsc, hd95 = text.split("### HD95 (mm)")
    dsc, gains = dsc.split("### Paired gains")
    lines = dsc.strip().splitlines()
    n_rows = len(config["methods"]) * len(config["evaluate"]["prompts"])
    assert lines[0].startswith("| Method | Prompt | CT | MR | Avg. |")
    assert len(lines) == 2 + n_rows
    assert f"(n={len(CT_DSC)})" in dsc
    # HD95 below: one row per (method, prompt); the CT mask of unknown spacing is counted as undefined
    hd95_lines = [line for line in hd95.splitlines() if line.startswith("|")]
    assert hd95_lines[0].startswith("| Method | Prompt | CT | MR | Avg. |") and len(hd95_lines) == 2 + n_rows
    assert f"(n={len(CT_DSC) - 1}), 1 undefined" in hd95
    # SEG-SAM against the decoder it extends, on the same prompts: one row per prompt
    gain_rows = [line for line in gains.splitlines() if line.startswith("| SEG-SAM |")]
    assert len(gain_rows) == len(config["evaluate"]["prompts"]) and "LiteMedSAM + fine-tuned decoder" in gain_rows[0]


def test_seg_sam_gain_over_its_baseline_is_paired_by_case(outputs) -> None:
    out, config = outputs
    table = pd.read_csv(out["csv"]).set_index(["method", "prompt"])
    row = table.loc[("segsam", "box")]
    assert row["gain_avg_vs"] == "ft_decoder"
    # the fixture offsets each method's DSC by -0.05 per position in config.methods: segsam is 5 points lower
    assert row["gain_avg"] == pytest.approx(-5.0, abs=0.01)
    assert row["gain_avg_lo"] <= row["gain_avg"] <= row["gain_avg_hi"]
    assert pd.isna(table.loc[("medsam_lite", "box"), "gain_avg"])  # no baseline: no gain


def test_hd95_summary_in_the_sidecar(outputs) -> None:
    out, config = outputs
    records = pd.DataFrame(json.loads(out["json"].read_text(encoding="utf-8"))["hd95_mm"])
    first = config["methods"][0]
    mr = records[(records["method"] == first) & (records["prompt"] == "box") & (records["modality"] == "mr")].iloc[0]
    assert mr["median"] == pytest.approx(np.median([10 * (1 - d) for d in MR_DSC]))
    assert int(mr["n"]) == len(MR_DSC) and int(mr["n_undefined"]) == 0


def test_json_sidecar_records_provenance(outputs) -> None:
    out, config = outputs
    sidecar = json.loads(out["json"].read_text(encoding="utf-8"))
    assert sidecar["dataset"] == config["dataset"]["name"] == "demo"
    # the pretrained weights the evaluations recorded, per encoder
    assert sidecar["weights"] == {
        "tiny_vit": {"weights": config["encoder"]["weights"], "sha256": config["encoder"]["sha256"]}
    }
    assert sidecar["config_hash"] == config_hash(config)
    assert isinstance(sidecar["git_commit"], str) and sidecar["git_commit"]
    assert sidecar["is_paper_data"] is False
    assert "NOT on SA-Med2D-16M" in sidecar["warning"]
    assert sidecar["methods"] == config["methods"]
    assert sidecar["n_masks"] == len(CT_DSC) + len(MR_DSC)
    assert sidecar["n_cases"] == 4
    assert sidecar["bootstrap"]["resamples"] == 200


def test_png_is_a_valid_image(outputs) -> None:
    out, _ = outputs
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = sitk.ReadImage(str(out["png"]))
    assert image.GetWidth() > 100 and image.GetHeight() > 100
    assert not [p for p in out["png"].parent.iterdir() if p.name.startswith(".")]  # no temporary files


def test_unknown_method_in_results_is_a_config_error() -> None:
    per_mask = _per_mask("medsam_lite", 0.0).assign(method="not_registered")
    with pytest.raises(ConfigError, match="not_registered"):
        binary_table(per_mask, n_boot=0, ci=0.95, seed=0)
