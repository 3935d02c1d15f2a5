"""Figures (PNG) for the results people look at."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from segsam.atomic import atomic_path  # noqa: E402
from segsam.report.paper import MODALITY_ORDER  # noqa: E402


def _method_colours(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One distinct colour per method, the same in every panel: tab10 up to 10 methods, then tab20
    with its 10 saturated colours first and their light partners after (neighbours stay unlike)."""
    if len(methods) <= 10:
        palette = [plt.get_cmap("tab10")(i) for i in range(10)]
    else:
        palette = [plt.get_cmap("tab20")(i) for i in [*range(0, 20, 2), *range(1, 20, 2)]]
    return {m: palette[i % len(palette)][:3] for i, m in enumerate(methods)}


def modality_bars_figure(
    table: pd.DataFrame,
    title: str,
    columns: Sequence[str] | None = None,
    ylabel: str = "DSC (%)",
    column_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """Grouped bars of DSC per modality (and avg) with CI whiskers: one panel per prompt, one colour per method.

    Args:
        table: Table 1 rows (``row``, ``prompt``, one column per modality and ``avg``, with
            ``<col>_lo`` / ``<col>_hi`` interval bounds).
        title: Figure title.
        columns: The table's columns to plot, in order (None: the modalities present and ``avg``);
            table 3 plots its datasets.
        ylabel: The y axis label.
        column_labels: Tick labels of ``columns`` (None: upper-case modality names, ``Avg.``).

    Returns:
        The figure; the legend (one entry per method, in table order) sits right of the panels.
        Each panel has a slot per method that has rows with its prompt.
    """
    columns = list(columns) if columns is not None else [c for c in [*MODALITY_ORDER, "avg"] if c in table.columns]
    labels = (
        list(column_labels) if column_labels is not None else [c.upper() if c != "avg" else "Avg." for c in columns]
    )
    methods = list(dict.fromkeys(table["row"]))
    prompts = list(dict.fromkeys(table["prompt"])) or ["box"]
    colours = _method_colours(methods)
    x = np.arange(len(columns))
    fig, axes = plt.subplots(
        1,
        len(prompts),
        sharey=True,
        squeeze=False,
        figsize=(len(prompts) * max(4.0, 1.2 * len(columns) + 0.25 * len(methods)) + 2.6, 4.2),
    )
    for ax, prompt in zip(axes[0], prompts):
        rows = table[table["prompt"] == prompt].to_dict(orient="records")
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            means = np.array([row[c] for c in columns], dtype=float)
            low = means - np.array([row.get(f"{c}_lo", np.nan) for c in columns], dtype=float)
            high = np.array([row.get(f"{c}_hi", np.nan) for c in columns], dtype=float) - means
            ax.bar(
                x + (i - (len(rows) - 1) / 2) * width,
                means,
                width,
                yerr=np.vstack([low, high]),
                capsize=2,
                color=colours[row["row"]],
                error_kw={"elinewidth": 0.8},
            )
        ax.set_xticks(x, labels)
        ax.set_xlim(-0.5, len(columns) - 0.5)
        ax.set_title(f"{prompt} prompt" if prompt != "none" else "no prompt", fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
    fig.legend(handles, methods, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def modality_bars(table: pd.DataFrame, out_png: str | Path, title: str, **kwargs: Any) -> None:
    """Writes :func:`modality_bars_figure` as a PNG (atomically); ``kwargs`` go to it."""
    fig = modality_bars_figure(table, title, **kwargs)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)


# one colour per class id (tab20 cycled); background transparent
def _class_colour(class_id: int) -> tuple[float, float, float]:
    return plt.get_cmap("tab20")(class_id % 20)[:3]


def _overlay(ax: Any, image: np.ndarray, masks: list[tuple[int, np.ndarray]], title: str) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*image.shape[:2], 4))
    for class_id, mask in masks:
        rgba[mask > 0] = (*_class_colour(class_id), 0.45)
    ax.imshow(rgba, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def qualitative_panel(
    prompts_parquet: str | Path, example_dirs: Sequence[str | Path], displays: Sequence[str], out_png: str | Path
) -> None:
    """Fig. 3-style panel: per example slice, the image with ground truth, then each method's masks (box prompts).

    Args:
        prompts_parquet: The saved test prompts (image, mask and class of every test object).
        example_dirs: Each method's folder of predicted example masks (same order).
        displays: Row labels of the methods (same order).
        out_png: Output figure.
    """
    from segsam.data.io import read_png

    # every test object once, from the saved prompts (whatever the methods: prompt-free ones have no box rows)
    table = pd.read_parquet(prompts_parquet, columns=["image", "mask", "class_id"]).drop_duplicates("mask")
    names = {p.name for folder in example_dirs for p in Path(folder).glob("*.png")}
    table = table[table["mask"].map(lambda m: Path(m).name in names)]
    images = sorted(table["image"].unique())
    fig, axes = plt.subplots(
        max(len(images), 1),
        len(example_dirs) + 1,
        figsize=(2.4 * (len(example_dirs) + 1), 2.4 * max(len(images), 1)),
        squeeze=False,
    )
    for row, image in enumerate(images):
        group = table[table["image"] == image]
        pixels = read_png(image)
        truth = [(int(c), read_png(m)) for c, m in zip(group["class_id"], group["mask"])]
        _overlay(axes[row, 0], pixels, truth, f"ground truth\n{Path(image).stem.split('--')[2]}")
        for col, (folder, label) in enumerate(zip(example_dirs, displays), start=1):
            masks = [
                (int(c), read_png(Path(folder) / Path(m).name))
                for c, m in zip(group["class_id"], group["mask"])
                if (Path(folder) / Path(m).name).exists()
            ]
            _overlay(axes[row, col], pixels, masks, label)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def training_curves(summaries: Sequence[str | Path], out_png: str | Path) -> None:
    """Loss per epoch of every trained method and, for those with SAWD's class head, its class
    accuracy on its training prompts (solid) and on held-out test slices (dashed), and the held-out
    accuracy after the class-head refit (a star at the last epoch); legend right."""
    histories = [json.loads(Path(path).read_text(encoding="utf-8")) for path in summaries]
    colours = _method_colours([s["method"] for s in histories])
    with_classes = [s for s in histories if any("class_acc" in h for h in s["history"])]
    fig, axes = plt.subplots(1, 2 if with_classes else 1, figsize=(10.5 if with_classes else 5.5, 3.6), squeeze=False)
    for summary in histories:
        epochs = [h["epoch"] for h in summary["history"]]
        colour = colours[summary["method"]]
        axes[0, 0].plot(
            epochs, [h["loss"] for h in summary["history"]], marker="o", label=summary["method"], color=colour
        )
    for summary in with_classes:
        epochs = [h["epoch"] for h in summary["history"]]
        colour = colours[summary["method"]]
        axes[0, 1].plot(epochs, [h.get("class_acc") for h in summary["history"]], marker="o", color=colour)
        heldout = [h.get("heldout_class_acc") for h in summary["history"]]
        if any(v is not None for v in heldout):
            axes[0, 1].plot(epochs, heldout, marker="s", linestyle="--", color=colour)
        refit = (summary.get("class_head_refit") or {}).get("heldout_class_acc")
        if refit is not None and epochs:
            axes[0, 1].plot([epochs[-1]], [refit], marker="*", markersize=12, linestyle="none", color=colour)
    axes[0, 0].set_ylabel("training loss")
    if with_classes:
        axes[0, 1].set_ylabel("SAWD class accuracy (-- held-out, * refitted)")
        axes[0, 1].set_ylim(0, 1)
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if histories:
        axes[0, -1].legend(
            *axes[0, 0].get_legend_handles_labels(),
            fontsize=8,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
        )
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
