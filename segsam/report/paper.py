"""The paper's side of every table: its column order, its row names for our methods, its cells.

The published cells are ``config/paper/*.csv`` (copied from ``../shared/paper``);
tables put them beside ours as ``paper_<col>`` and ``delta_<col>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

MODALITY_ORDER = ["ct", "mr", "pet", "dermoscopy", "endoscopy", "fundus", "ultrasound", "xray"]
PAPER_DIR = Path(__file__).resolve().parents[2] / "config" / "paper"
# our method names -> the paper's row labels (methods without a paper row get no paper cells)
PAPER_ROWS = {
    "sam": "SAM",
    "ft_sam": "FT-SAM",
    "sam_med2d": "SAM-Med2D",
    "medsam": "MedSAM",
    "med_sa": "Med-SA",
    "segsam": "SEG-SAM",
    "sam_med2d+sawd": "SAM-Med2D+SAWD",
    "medsam+sawd": "MedSAM+SAWD",
    "med_sa+sawd": "Med-SA+SAWD",
    "unet": "nnU-Net",
    "unetr": "UNETR",
}


def paper_values(csv_name: str) -> pd.DataFrame:
    """The paper's published cells (``config/paper/<csv_name>``, copied from ../shared/paper)."""
    return pd.read_csv(PAPER_DIR / csv_name)


def add_paper_columns(table: pd.DataFrame, paper: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Add ``paper_<col>`` and ``delta_<col>`` (ours - paper) where the paper has the cell."""
    table = table.copy()
    lookup = {(r.method, r.prompt, r.modality): r.value for r in paper.itertuples(index=False)}
    for column in columns:
        paper_col = [
            lookup.get((PAPER_ROWS.get(m), p, column), float("nan")) for m, p in zip(table["method"], table["prompt"])
        ]
        table[f"paper_{column}"] = paper_col
        table[f"delta_{column}"] = (table[column] - table[f"paper_{column}"]).round(2)
    return table


def modality_columns(modalities: Iterable[str]) -> list[str]:
    """The modalities present, in the paper's column order (others after them, sorted), without ``avg``."""
    present = set(modalities)
    return [m for m in MODALITY_ORDER if m in present] + sorted(present - set(MODALITY_ORDER) - {"avg"})


# table 4/8 rows of the paper <- our ablation methods (cumulative components, see segsam.methods)
ABLATION_ROWS = {
    "ft_decoder": "baseline",
    "sawd_pmt": "1",
    "sawd_unpmt": "2",
    "sawd_sem": "3",
    "t2vse": "4",
    "cmsa": "SEG-SAM",
    "segsam": "SEG-SAM",
}


# SAM ViT-B baselines of the paper's tables 5 (box) and 7 (point), in row order; each has a
# ``<baseline>+sawd`` twin. FT-SAM is not in those tables: its rows get no paper cells.
PLUGIN_BASELINES = ("ft_sam", "sam_med2d", "medsam", "med_sa")
# the paper's column that the training dataset's test split stands for; a cross dataset stands for
# its own column (kits23, btcv; the paper's table 5 has no AMOS column)
PLUGIN_PAPER_DATASET = "sa_med2d"
PLUGIN_VARIANTS = (("orig", ""), ("+SAWD", "+sawd"))  # (paper variant, suffix of our method name)
CROSS_DATASET_NAMES = {"kits23": "KiTS23", "btcv": "BTCV", "amos": "AMOS"}
