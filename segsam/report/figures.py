"""Figures (PNG) for the results people look at."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from segsam.atomic import atomic_path  # noqa: E402
from segsam.report.tables import MODALITY_ORDER  # noqa: E402


def modality_bars(table: pd.DataFrame, out_png: str | Path, title: str) -> None:
    """Grouped bars: DSC per modality (and avg) for each (method, prompt) row, with CI whiskers."""
    columns = [c for c in [*MODALITY_ORDER, "avg"] if c in table.columns]
    labels = [f"{r['row']} ({r['prompt']})" for r in table.to_dict(orient="records")]
    x = np.arange(len(columns))
    width = 0.8 / max(len(table), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(columns) + 0.4 * len(table)), 4.2))
    for i, row in enumerate(table.to_dict(orient="records")):
        means = np.array([row[c] for c in columns], dtype=float)
        low = means - np.array([row.get(f"{c}_lo", np.nan) for c in columns], dtype=float)
        high = np.array([row.get(f"{c}_hi", np.nan) for c in columns], dtype=float) - means
        ax.bar(x + (i - (len(table) - 1) / 2) * width, means, width, yerr=np.vstack([low, high]), capsize=3, label=labels[i])
    ax.set_xticks(x, [c.upper() if c != "avg" else "Avg." for c in columns])
    ax.set_ylabel("DSC (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
