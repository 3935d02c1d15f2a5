"""Table 1: binary DSC per prompted mask, in the paper's layout, with a provenance sidecar.

``table1.csv``: binary DSC (percent) per prompted mask; one row per
(method, prompt), one column per modality present, ``avg`` = mean of the
modality means, ``n`` masks per modality and bootstrap interval bounds.
The sidecar ``table1.json`` says which dataset, weights, config hash and
git commit produced it, so demo numbers are never mistaken for the paper's.
``table1.md`` adds the median HD95 (mm) of the same prompted masks below
the DSC table; the paper's table 1 has no distance column, so the CSV keeps
the paper's layout and the sidecar holds the HD95 summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segsam.atomic import atomic_path, write_json, write_text
from segsam.config import config_hash
from segsam.evaluate.metrics import distance_summary, summarise
from segsam.report.inputs import Bootstrap, ordered, read_tables
from segsam.report.paired import TABLE1_BASELINES, attach_gains, gains, gains_markdown
from segsam.report.paper import add_paper_columns, paper_values
from segsam.report.render import distance_markdown, to_markdown, value_columns, wide_table
from segsam.tracking import git_commit

log = logging.getLogger(__name__)


def binary_table(per_mask: pd.DataFrame, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Table 1 layout: binary DSC (percent) per (method, prompt) and modality."""
    return wide_table(summarise(per_mask, n_boot, ci, seed))


def _provenance(
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, str]],
    per_mask: pd.DataFrame,
    distances: pd.DataFrame,
    boot: Bootstrap,
) -> dict[str, Any]:
    """The sidecar ``table1.json``: what the table is, which dataset, weights, config and commit made it."""
    return {
        "table": "table1: binary DSC (%) per prompted mask; avg = mean of modality means",
        "paper_columns": "paper_<col> = the paper's published cell (config/paper/table1_binary_dsc.csv), "
        "delta_<col> = ours - paper; "
        "the paper's avg covers 8 modalities, ours those present",
        "dataset": config["dataset"]["name"],
        "is_paper_data": config["dataset"]["name"] == "paper",
        "warning": None
        if config["dataset"]["name"] == "paper"
        else (
            f"computed on the '{config['dataset']['name']}' dataset, NOT on SA-Med2D-16M: "
            "these numbers are not comparable with the paper's Table 1"
        ),
        "weights": dict(weights),
        "methods": list(per_mask["method"].unique()),
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "n_masks": int(per_mask["mask"].nunique()),
        "n_images": int(per_mask["image"].nunique()),
        "n_cases": int(per_mask["case"].nunique()),
        "bootstrap": {"resamples": boot.n_boot, "ci": boot.ci, "seed": boot.seed},
        "hd95_mm": distances.to_dict(orient="records"),
    }


def make_table1(
    per_mask_files: Sequence[str | Path],
    out_csv: str | Path,
    out_md: str | Path,
    out_json: str | Path,
    *,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """Build ``results/table1.csv`` (+ Markdown and the provenance sidecar).

    Args:
        per_mask_files: The evaluation's per-mask tables, one per method.
        out_csv: ``table1.csv``.
        out_md: ``table1.md`` (DSC, then the median HD95).
        out_json: The provenance sidecar.
        config: The validated config.
        weights: {encoder: {"weights", "sha256"}} of the pretrained encoders the
            methods started from (the evaluations' provenance), for the sidecar.
    """
    per_mask = ordered(read_tables(per_mask_files), config)
    boot = Bootstrap.from_config(config)
    table = binary_table(per_mask, boot.n_boot, boot.ci, boot.seed)
    modalities = value_columns(table)
    table = add_paper_columns(table, paper_values("table1_binary_dsc.csv"), modalities)
    found = gains(per_mask, TABLE1_BASELINES, boot)
    table = attach_gains(table, found, "gain_avg")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    distances = distance_summary(per_mask)
    display = dict(zip(table["method"], table["row"]))
    write_text(
        out_md,
        to_markdown(table, modalities)
        + "\n"
        + gains_markdown(found, "binary DSC avg", display)
        + "\n### HD95 (mm), median over the same prompted masks (empty prediction = slice diagonal)\n\n"
        + distance_markdown(distances),
    )
    write_json(out_json, _provenance(config, weights, per_mask, distances, boot))
    log.info("table1:\n%s", to_markdown(table, modalities))
    return table
