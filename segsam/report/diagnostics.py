"""Diagnostics for when a number looks wrong: confusion matrices of SAWD's class, and DSC per class.

Rule ``diagnostics`` writes, for every evaluated method that names the class
of a prompted object (SAWD's class head):

* ``results/diagnostics/confusion.csv``: one row per (method, prompt, true
  class, predicted class) with its count;
* ``results/figures/confusion.png``: one panel per method (box prompts, or
  the first prompt evaluated): true x predicted class, coloured by the
  row-normalised share, with the counts written in the cells;
* ``results/diagnostics/per_class.csv`` (+ ``.md``): for every method,
  prompt and class, the number of masks, the mean binary DSC, the mean
  semantic DSC and the share named right;
* ``results/diagnostics/per_case.csv``: the same per test case as well, since
  a class's errors can gather in one test case (the Markdown shows the class
  accuracies as a case x class grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segsam.atomic import atomic_path, write_text  # noqa: E402
from segsam.methods import get_method  # noqa: E402
from segsam.report.inputs import ordered, read_tables  # noqa: E402

CONFUSION_COLUMNS = ["method", "prompt", "class_id", "class_name", "pred_class_id", "pred_class_name", "count"]
PER_CLASS_COLUMNS = ["method", "prompt", "class_id", "class_name", "n", "dsc", "sem_dsc", "class_acc"]
PER_CASE_COLUMNS = ["method", "prompt", "case", "class_id", "class_name", "n", "dsc", "sem_dsc", "class_acc"]


def named(per_mask: pd.DataFrame) -> pd.DataFrame:
    """The rows of the methods that name a prompted object's class (a predicted class id of 0 or more)."""
    prompted = per_mask[per_mask["prompt"] != "none"]
    return prompted[prompted["pred_class_id"] >= 0]


def confusion(per_mask: pd.DataFrame) -> pd.DataFrame:
    """Counts of (true class, predicted class) per method and prompt (:data:`CONFUSION_COLUMNS`)."""
    rows = named(per_mask)
    names = dict(zip(per_mask["class_id"], per_mask["class_name"]))
    counts = (
        rows.groupby(["method", "prompt", "class_id", "pred_class_id"], sort=False).size().reset_index(name="count")
    )
    counts["class_name"] = counts["class_id"].map(names)
    counts["pred_class_name"] = counts["pred_class_id"].map(lambda c: names.get(c, str(c)))
    return counts[CONFUSION_COLUMNS]


def _scores(per_mask: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Masks, mean DSC, mean semantic DSC and class accuracy (percent) per group of ``keys``, prompted rows only."""
    frame = per_mask[per_mask["prompt"] != "none"].assign(
        right=lambda f: np.where(f["pred_class_id"] >= 0, f["pred_class_id"] == f["class_id"], np.nan)
    )
    table = (
        frame.groupby(keys, sort=False)
        .agg(n=("dsc", "size"), dsc=("dsc", "mean"), sem_dsc=("sem_dsc", "mean"), class_acc=("right", "mean"))
        .reset_index()
    )
    for column in ("dsc", "sem_dsc", "class_acc"):
        table[column] = (100 * table[column]).round(2)
    return table


def per_class(per_mask: pd.DataFrame) -> pd.DataFrame:
    """DSC, semantic DSC and class accuracy per (method, prompt, class) (:data:`PER_CLASS_COLUMNS`)."""
    return _scores(per_mask, ["method", "prompt", "class_id", "class_name"])[PER_CLASS_COLUMNS]


def per_case(per_mask: pd.DataFrame) -> pd.DataFrame:
    """The same per (method, prompt, case, class): methods in their order, then cases (:data:`PER_CASE_COLUMNS`)."""
    table = _scores(per_mask, ["method", "prompt", "case", "class_id", "class_name"])
    methods = pd.Categorical(table["method"], categories=list(dict.fromkeys(per_mask["method"])), ordered=True)
    table = table.assign(order=methods).sort_values(["order", "prompt", "case", "class_id"])
    return table[PER_CASE_COLUMNS].reset_index(drop=True)


def case_grid(cases: pd.DataFrame) -> pd.DataFrame:
    """Class accuracy (percent) where classes are named: a row per (method, prompt, case), a column per class."""
    named_rows = cases[cases["class_acc"].notna()]
    if named_rows.empty:
        return pd.DataFrame(columns=["method", "prompt", "case"])
    grid = named_rows.pivot_table(
        index=["method", "prompt", "case"], columns="class_name", values="class_acc", sort=False
    )
    return grid.reset_index().rename_axis(columns=None)


def _panel(ax: Any, counts: pd.DataFrame, title: str) -> None:
    """One confusion matrix: cells coloured by the row share, the count written in each non-empty cell."""
    classes = sorted(set(counts["class_name"]) | set(counts["pred_class_name"]))
    matrix = (
        counts.pivot_table(index="class_name", columns="pred_class_name", values="count", aggfunc="sum", fill_value=0)
        .reindex(index=classes, columns=classes, fill_value=0)
        .to_numpy()
    )
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in zip(*np.nonzero(matrix)):
        ax.text(
            j,
            i,
            str(matrix[i, j]),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if share[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set_xlabel("predicted class", fontsize=7)
    ax.set_ylabel("true class", fontsize=7)
    ax.set_title(title, fontsize=8)


def confusion_figure(counts: pd.DataFrame, out_png: str | Path) -> None:
    """One panel per method, for its box prompts (else its first prompt); a note when no method names classes."""
    methods = list(dict.fromkeys(counts["method"]))
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(4.2 * max(1, len(methods)), 4.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        mine = counts[counts["method"] == method]
        prompt = "box" if "box" in set(mine["prompt"]) else mine["prompt"].iloc[0]
        _panel(ax, mine[mine["prompt"] == prompt], f"{get_method(method).display} ({prompt})")
    if not methods:
        axes[0, 0].text(0.5, 0.5, "no evaluated method names classes", ha="center", va="center")
        axes[0, 0].axis("off")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def make_diagnostics(
    per_mask_files: Sequence[str | Path],
    out_confusion: str | Path,
    out_per_class: str | Path,
    out_per_case: str | Path,
    out_md: str | Path,
    out_png: str | Path,
    *,
    config: Mapping[str, Any],
) -> pd.DataFrame:
    """Rule ``diagnostics``: the confusion counts and figure, the per-class and per-case tables (see the module doc)."""
    per_mask = ordered(read_tables(per_mask_files), config)
    counts = confusion(per_mask)
    classes = per_class(per_mask)
    cases = per_case(per_mask)
    for table, out in ((counts, out_confusion), (classes, out_per_class), (cases, out_per_case)):
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    grid = case_grid(cases)
    write_text(
        out_md,
        "## DSC, semantic DSC and class accuracy per class (%)\n\n"
        + classes.to_markdown(index=False)
        + "\n\n## Class named right per test case (%)\n\n"
        + (grid.to_markdown(index=False, floatfmt=".1f") if not grid.empty else "No evaluated method names classes.")
        + "\n",
    )
    confusion_figure(counts, out_png)
    return classes
