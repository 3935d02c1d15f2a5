"""The wide layout every results table shares, and its Markdown for people.

A long summary (one row per method, prompt and modality: ``mean``, ``low``,
``high``, ``n``, fractions) becomes one row per (method, prompt) in percent,
one column per modality present and ``avg`` (:func:`wide_table`); the
Markdown shows each cell as ``mean [lo, hi] (n=...)`` with the paper's cell
beside it where there is one (:func:`to_markdown`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from segsam.methods import get_method
from segsam.report.paper import MODALITY_ORDER, modality_columns


def value_columns(table: pd.DataFrame) -> list[str]:
    """The modality columns of a wide table and ``avg``, in the table's column order."""
    return [c for c in table.columns if c in MODALITY_ORDER or c == "avg"]


def markdown_head(modalities: Sequence[str]) -> list[str]:
    """Header and separator lines of a Markdown table: Method, Prompt, then one column per modality (``Avg.``)."""
    head = ["Method", "Prompt", *[m.upper() if m != "avg" else "Avg." for m in modalities]]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Long means (method, prompt, modality, mean, low, high, n) -> one row per (method, prompt), percent.

    Columns: method, row (display name), prompt, one column per modality present, ``avg``, and
    ``<col>_lo`` / ``<col>_hi`` / ``n_<col>`` for each.
    """
    modalities = modality_columns(long["modality"])
    rows = []
    for (method, prompt), frame in long.groupby(["method", "prompt"], sort=False):
        by = frame.set_index("modality")
        row: dict[str, Any] = {"method": method, "row": get_method(method).display, "prompt": prompt}
        for m in [*modalities, "avg"]:
            row[m] = round(100 * by.loc[m, "mean"], 2) if m in by.index else float("nan")
        for m in [*modalities, "avg"]:
            if m in by.index:
                row[f"{m}_lo"] = round(100 * by.loc[m, "low"], 2)
                row[f"{m}_hi"] = round(100 * by.loc[m, "high"], 2)
                row[f"n_{m}"] = int(by.loc[m, "n"])
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, modalities: Sequence[str]) -> str:
    """Render the table for people: ``mean [lo, hi]`` per cell, n in the header."""
    lines = markdown_head(modalities)
    for row in table.to_dict(orient="records"):
        cells = [row["row"], row["prompt"]]
        for m in modalities:
            cell = f"{row[m]:.2f} [{row[f'{m}_lo']:.2f}, {row[f'{m}_hi']:.2f}] (n={row[f'n_{m}']})"
            paper = row.get(f"paper_{m}", float("nan"))
            if paper == paper:  # not NaN
                cell += f"; paper {paper:.2f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def distance_markdown(distances: pd.DataFrame) -> str:
    """Median HD95 (mm) per (method, prompt) and modality; undefined masks counted in the cell."""
    modalities = [*modality_columns(distances["modality"]), "avg"]
    lines = markdown_head(modalities)
    for (method, prompt), frame in distances.groupby(["method", "prompt"], sort=False):
        by = frame.set_index("modality")
        cells = [get_method(method).display, prompt]
        for m in modalities:
            if m not in by.index:
                cells.append("")
                continue
            cell = f"{by.loc[m, 'median']:.2f} (n={int(by.loc[m, 'n'])})"
            if by.loc[m, "n_undefined"]:
                cell += f", {int(by.loc[m, 'n_undefined'])} undefined"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
