"""PG-SAM through the whole workflow on the tiny config: its rows in table 2 and in the Synapse-style table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.wfutils import snakemake

pytestmark = pytest.mark.slow


def test_pg_sam_rows_reach_table2_and_the_synapse_table(tiny_run: Path, tmp_path: Path) -> None:
    """On a copy of the tiny run: its slices, embeddings, segsam and unet are reused; PG-SAM trains and scores."""
    work = tmp_path / "pg_sam"
    shutil.copytree(tiny_run, work, symlinks=True)
    overlay = work / "config" / "pg_sam_tiny.yaml"
    overlay.write_text(yaml.safe_dump({"methods": ["medsam_lite", "segsam", "unet", "pg_sam"]}))
    snakemake(work, "--cores", "2", overlays=("config/pg_sam_tiny.yaml",))
    table2 = pd.read_csv(work / "results/table2.csv")
    assert ("pg_sam", "none") in set(zip(table2["method"], table2["prompt"]))
    assert "pg_sam" not in set(pd.read_csv(work / "results/table1.csv")["method"])  # no prompts: not in table 1
    synapse = pd.read_csv(work / "results/table_synapse.csv")
    assert list(zip(synapse["method"], synapse["prompt"])) == [("segsam", "box"), ("unet", "none"), ("pg_sam", "none")]
    # the demo phantoms hold all eight Synapse organs
    for organ in ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"):
        assert f"dsc_{organ}" in synapse.columns
    assert synapse["mdsc"].between(0, 100).all() and synapse["paper_mdsc"].isna().all()
    assert "diff_mdsc_unet" in synapse.columns
    assert "Paper cells are empty" in (work / "results/table_synapse.md").read_text(encoding="utf-8")
    summary = (work / "results/models/pg_sam/train_summary.json").read_text(encoding="utf-8")
    assert '"label_fraction": 1.0' in summary
