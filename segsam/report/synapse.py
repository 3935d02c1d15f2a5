"""The Synapse-style table of PG-SAM's paper: 3D DSC and HD95 per organ, per case (rule ``table_synapse``).

PG-SAM reports, on Synapse (BTCV's eight abdominal organs), the DSC and the
HD95 of each organ and their means, averaged over test volumes. This table
does the same for any dataset, on the organs of those eight that its classes
include (offline, on CHAOS MR: liver, spleen and both kidneys). The rules:

* **Inputs**: each evaluation's ``per_case.parquet`` (:mod:`segsam.evaluate.volume`):
  one row per (method, prompt, case, class) with the 3D DSC and HD95 (mm) of
  the case's stacked axial planes.
* **Organ mapping** (:data:`SYNAPSE_ORGANS`): Synapse's organs -> vocabulary
  class names; an organ is *present* when a test case of any row has that class.
  Absent organs get no column and are named in the Markdown and the sidecar.
* **Rows**: the configured methods that segment without prompts (PG-SAM and
  its switches, U-Net, UNETR; prompt ``none``) and SEG-SAM with box prompts
  (prompt ``box``) for reference (:func:`synapse_rows`), in ``methods`` order.
* **Per organ**: the mean over the cases that contain the organ of its 3D
  DSC (percent) and 3D HD95 (mm; an empty prediction scores the volume's
  diagonal, unknown spacing leaves a case out of the HD95 mean).
* **Mean** (``mdsc``, ``mhd95``): the mean of the present organs' means, as
  the paper's "average" column.
* **Intervals**: percentile bootstrap over *cases*: the table's test cases are
  resampled with replacement (``evaluate.bootstrap`` times, seeded with
  ``evaluate.seed``), every organ mean and the mean over organs recomputed on
  each resample (an organ no resampled case contains is left out of that
  resample's mean). One set of resamples serves every row, so differences
  between rows are paired: ``diff_mdsc_<reference>`` is a row's mDSC minus a
  reference row's, with the interval of that difference over the same
  resamples. The references (:data:`REFERENCES`) are the U-Net, the baseline
  PG-SAM is measured against, and PG-SAM itself, the row its ablation
  switches are measured against; each configured one gets its column.
* **Paper cells** (``paper_*``): only numbers verified from the paper itself
  (``config/paper/pg_sam_synapse.csv``). The PG-SAM seed is an abstract, which
  gives no table, so that file has no rows and the cells are empty; the
  Markdown and the sidecar say so.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segsam.atomic import atomic_path, write_json, write_text
from segsam.config import config_hash
from segsam.methods import get_method
from segsam.report.inputs import Bootstrap, read_tables
from segsam.report.paper import paper_values

log = logging.getLogger(__name__)

#: Synapse's eight organs, in the paper's column order: display name -> vocabulary class name.
SYNAPSE_ORGANS: dict[str, str] = {
    "Aorta": "aorta",
    "Gallbladder": "gallbladder",
    "Kidney (L)": "kidney_left",
    "Kidney (R)": "kidney_right",
    "Liver": "liver",
    "Pancreas": "pancreas",
    "Spleen": "spleen",
    "Stomach": "stomach",
}
#: The rows every other row is compared with (paired differences), each when it is configured.
REFERENCES = ("unet", "pg_sam")
#: The prompted method shown for reference, and its prompt.
PROMPTED_REFERENCE = ("segsam", "box")
#: The paper's cells (method, organ, metric, value); no rows while no number is verified from the paper.
PAPER_CSV = "pg_sam_synapse.csv"
PAPER_NOTE = (
    "Paper cells are empty: the PG-SAM seed is only its abstract, which reports no per-organ numbers, and no "
    "value has been verified from the paper itself (config/paper/pg_sam_synapse.csv has no rows)."
)


def synapse_rows(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The (method, prompt) rows of the table among the configured methods, in their order.

    Methods without prompts (PG-SAM and its switches, U-Net, UNETR) with prompt
    ``none``, and SEG-SAM with box prompts.
    """
    rows = []
    for method in methods:
        if not get_method(method).prompted:
            rows.append((method, "none"))
        elif method == PROMPTED_REFERENCE[0]:
            rows.append(PROMPTED_REFERENCE)
    return rows


def present_organs(per_case: pd.DataFrame) -> dict[str, str]:
    """The organs of :data:`SYNAPSE_ORGANS` whose class occurs in the per-case rows, in the paper's order."""
    classes = set(per_case["class_name"])
    return {label: name for label, name in SYNAPSE_ORGANS.items() if name in classes}


@dataclass(frozen=True)
class CaseMatrix:
    """One row's per-case metric: cases x organs, NaN where the case lacks the organ (or the value is undefined).

    Attributes:
        values: n_cases x n_organs.
    """

    values: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame, column: str, cases: Sequence[str], organs: Sequence[str]) -> CaseMatrix:
        """The ``column`` of one row's per-case frame, laid out on ``cases`` x ``organs`` (class names)."""
        table = frame.pivot_table(index="case", columns="class_name", values=column, aggfunc="mean", dropna=False)
        return cls(table.reindex(index=list(cases), columns=list(organs)).to_numpy(np.float64))

    def organ_means(self, draws: np.ndarray | None = None) -> np.ndarray:
        """Mean over cases per organ: n_organs; with ``draws`` (n_boot x n_cases indices): n_boot x n_organs."""
        values = self.values if draws is None else self.values[draws]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an organ no (resampled) case has: NaN
            return np.nanmean(values, axis=-2)

    def mean(self, draws: np.ndarray | None = None) -> np.ndarray | float:
        """Mean over organs of :meth:`organ_means` (organs without a value left out)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = np.nanmean(self.organ_means(draws), axis=-1)
        return float(result) if draws is None else result


def case_draws(n_cases: int, boot: Bootstrap) -> np.ndarray:
    """n_boot x n_cases indices of the case resamples, shared by every row (paired intervals)."""
    if n_cases == 0:
        return np.zeros((0, 0), dtype=np.int64)
    rng = np.random.default_rng(boot.seed)
    return rng.integers(0, n_cases, size=(boot.n_boot, n_cases))


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (NaN ones ignored; NaN when none or no resamples)."""
    finite = samples[np.isfinite(samples)] if samples.size else samples
    if not finite.size:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(low), float(high)


def _cells(name: str, point: float, samples: np.ndarray, ci: float, scale: float) -> dict[str, float]:
    """``name``, ``name_lo``, ``name_hi`` (times ``scale``, 2 decimals)."""
    low, high = _interval(samples, ci)
    return {name: round(scale * point, 2), f"{name}_lo": round(scale * low, 2), f"{name}_hi": round(scale * high, 2)}


def _row(
    method: str,
    prompt: str,
    dsc: CaseMatrix,
    hd95: CaseMatrix,
    organs: Mapping[str, str],
    draws: np.ndarray,
    boot: Bootstrap,
) -> dict[str, Any]:
    """One row of the table: the means, the per-organ means and their case-bootstrap intervals."""
    row: dict[str, Any] = {"method": method, "row": get_method(method).display, "prompt": prompt}
    row["n_cases"] = int(np.isfinite(dsc.values).any(axis=1).sum())
    row.update(_cells("mdsc", dsc.mean(), dsc.mean(draws), boot.ci, 100.0))
    row.update(_cells("mhd95", hd95.mean(), hd95.mean(draws), boot.ci, 1.0))
    dsc_organs, dsc_draws = dsc.organ_means(), dsc.organ_means(draws)
    hd_organs, hd_draws = hd95.organ_means(), hd95.organ_means(draws)
    for k, name in enumerate(organs.values()):
        row.update(_cells(f"dsc_{name}", dsc_organs[k], dsc_draws[:, k], boot.ci, 100.0))
        row.update(_cells(f"hd95_{name}", hd_organs[k], hd_draws[:, k], boot.ci, 1.0))
    return row


def _paper_cells(table: pd.DataFrame, organs: Mapping[str, str]) -> pd.DataFrame:
    """``paper_mdsc``, ``paper_mhd95`` and ``paper_dsc_<organ>`` from :data:`PAPER_CSV` (empty: NaN)."""
    paper = paper_values(PAPER_CSV)
    lookup = {(r.method, r.organ, r.metric): float(r.value) for r in paper.itertuples(index=False)}
    table = table.copy()
    for column, organ, metric in [("paper_mdsc", "mean", "DSC"), ("paper_mhd95", "mean", "HD95")] + [
        (f"paper_dsc_{name}", name, "DSC") for name in organs.values()
    ]:
        table[column] = [lookup.get((m, organ, metric), float("nan")) for m in table["method"]]
    return table


def synapse_table(per_case: pd.DataFrame, rows: Sequence[tuple[str, str]], boot: Bootstrap) -> pd.DataFrame:
    """The table (rules in the module docstring).

    Args:
        per_case: The per-case 3D rows of the evaluated methods (every prompt).
        rows: The (method, prompt) rows, in order (:func:`synapse_rows`); rows
            without per-case results are left out.
        boot: The bootstrap settings.

    Returns:
        One row per (method, prompt): ``method``, ``row``, ``prompt``, ``n_cases``,
        ``mdsc`` / ``mhd95`` and ``dsc_<organ>`` / ``hd95_<organ>`` (class names) with
        ``_lo`` / ``_hi``, ``diff_mdsc_<reference>`` with ``_lo`` / ``_hi`` when the
        reference is a row, and the ``paper_*`` cells.
    """
    organs = present_organs(per_case)
    wanted = per_case.set_index(["method", "prompt"]).index.isin(list(rows))
    scored = per_case[wanted & per_case["class_name"].isin(list(organs.values()))]
    cases = sorted(scored["case"].unique())
    draws = case_draws(len(cases), boot)
    records, dsc_matrices = [], {}
    for method, prompt in rows:
        frame = scored[(scored["method"] == method) & (scored["prompt"] == prompt)]
        if frame.empty:
            continue
        dsc = CaseMatrix.of(frame, "dsc_3d", cases, list(organs.values()))
        hd95 = CaseMatrix.of(frame, "hd95_3d_mm", cases, list(organs.values()))
        dsc_matrices[method] = dsc
        records.append(_row(method, prompt, dsc, hd95, organs, draws, boot))
    table = pd.DataFrame(records) if records else pd.DataFrame(columns=["method", "row", "prompt", "n_cases"])
    for reference in REFERENCES:
        if reference in dsc_matrices:
            table = _differences(table, dsc_matrices, reference, draws, boot)
    return _paper_cells(table, organs)


def _differences(
    table: pd.DataFrame, dsc: Mapping[str, CaseMatrix], reference: str, draws: np.ndarray, boot: Bootstrap
) -> pd.DataFrame:
    """``diff_mdsc_<reference>`` (with ``_lo`` / ``_hi``): each row's mDSC minus the reference's, NaN on its own row."""
    columns = [f"diff_mdsc_{reference}{suffix}" for suffix in ("", "_lo", "_hi")]
    point, samples = dsc[reference].mean(), dsc[reference].mean(draws)
    cells = []
    for method in table["method"]:
        if method == reference:
            cells.append([float("nan")] * 3)
            continue
        mine = dsc[method]
        cell = _cells("d", mine.mean() - point, mine.mean(draws) - samples, boot.ci, 100.0)
        cells.append([cell["d"], cell["d_lo"], cell["d_hi"]])
    return table.join(pd.DataFrame(cells, columns=columns, index=table.index))


def _cell(row: Mapping[str, Any], name: str, unit: str = "") -> str:
    """``mean [lo, hi]`` of one cell, ``-`` when undefined."""
    value = row.get(name, float("nan"))
    if value != value:  # NaN
        return "-"
    return f"{value:.2f}{unit} [{row[f'{name}_lo']:.2f}, {row[f'{name}_hi']:.2f}]"


def synapse_markdown(table: pd.DataFrame, per_case: pd.DataFrame, dataset: str) -> str:
    """``table_synapse.md``: DSC and HD95 per organ and their means, intervals, absent organs, the paper note."""
    organs = present_organs(per_case)
    absent = [label for label in SYNAPSE_ORGANS if label not in organs]
    lines = [
        f"## Synapse-style table: 3D DSC (%) and HD95 (mm) per organ, {dataset} test cases\n",
        "Per organ: mean over the test cases that contain it; mDSC / mHD95: mean over the organs present. "
        "[lo, hi]: percentile bootstrap over cases (paired across rows).",
        f"Organs absent from this dataset's classes: {', '.join(absent) or 'none'}.",
        PAPER_NOTE,
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No method of this table was evaluated.\n"])
    head = ["Method", "Prompt", "Cases", "mDSC", "mHD95", *organs]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict(orient="records"):
        cells = [row["row"], row["prompt"], str(row["n_cases"]), _cell(row, "mdsc"), _cell(row, "mhd95")]
        cells += [_cell(row, f"dsc_{name}") for name in organs.values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "HD95 (mm) per organ:", "", "| Method | Prompt | " + " | ".join(organs) + " |"]
    lines.append("|" + "---|" * (len(organs) + 2))
    for row in table.to_dict(orient="records"):
        lines.append(
            "| " + " | ".join([row["row"], row["prompt"], *(_cell(row, f"hd95_{n}") for n in organs.values())]) + " |"
        )
    for reference in REFERENCES:
        column = f"diff_mdsc_{reference}"
        if column in table:
            display = get_method(reference).display
            lines += ["", f"mDSC minus {display}'s (percentage points, paired case bootstrap):", ""]
            for row in table.to_dict(orient="records"):
                if row["method"] != reference:
                    lines.append(f"* {row['row']} ({row['prompt']}): {_cell(row, column)}")
    return "\n".join(lines) + "\n"


def make_synapse_table(
    per_case_files: Sequence[str | Path],
    out_csv: str | Path,
    out_md: str | Path,
    out_json: str | Path,
    *,
    config: Mapping[str, Any],
) -> pd.DataFrame:
    """Write ``results/table_synapse.csv``, its Markdown and its sidecar.

    Args:
        per_case_files: The ``per_case.parquet`` of every method of :func:`synapse_rows`.
        out_csv: ``table_synapse.csv`` (:func:`synapse_table`).
        out_md: ``table_synapse.md``.
        out_json: ``table_synapse.json``: the rules, organs present and absent, cases, bootstrap, provenance.
        config: The validated config (``methods``, ``evaluate``, ``dataset``).

    Returns:
        The table, as written.
    """
    per_case = read_tables(per_case_files)
    boot = Bootstrap.from_config(config)
    rows = synapse_rows(config["methods"])
    table = synapse_table(per_case, rows, boot)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    dataset = config["dataset"]["name"]
    write_text(out_md, synapse_markdown(table, per_case, dataset))
    organs = present_organs(per_case)
    write_json(
        out_json,
        {
            "table": "Synapse-style: 3D DSC (%) and HD95 (mm) per organ, mean over test cases; mdsc / mhd95 = mean "
            "over the organs present; intervals: percentile bootstrap over cases, paired across rows",
            "dataset": dataset,
            "organ_mapping": SYNAPSE_ORGANS,
            "organs_present": list(organs),
            "organs_absent": [label for label in SYNAPSE_ORGANS if label not in organs],
            "rows": [f"{m} ({p})" for m, p in rows],
            "references": [reference for reference in REFERENCES if f"diff_mdsc_{reference}" in table],
            "cases": sorted(per_case.loc[per_case["class_name"].isin(list(organs.values())), "case"].unique()),
            "bootstrap": {"resamples": boot.n_boot, "ci": boot.ci, "seed": boot.seed, "unit": "case"},
            "paper_cells": PAPER_NOTE,
            "config_hash": config_hash(config),
        },
    )
    log.info("table_synapse:\n%s", synapse_markdown(table, per_case, dataset))
    return table
