"""The dataset index: parquet tables of masks and images, split by case (SPEC §4).

Splits are drawn per modality over *cases*, never slices: slices of one volume
along three axes would otherwise leak into the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from segsam.atomic import atomic_path
from segsam.data.slicing import MANIFEST
from segsam.errors import DataError

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image", "dataset", "modality", "case", "axis", "slice", "height", "width", "n_masks", "split"]


def split_cases(cases: pd.DataFrame, test_fraction: float, seed: int) -> dict[str, str]:
    """Assign each case to ``train`` or ``test``, per modality, deterministically.

    Args:
        cases: DataFrame with columns ``case`` and ``modality`` (one row per case).
        test_fraction: Share of each modality's cases in the test split; at
            least one case goes to each side when a modality has two or more.
        seed: Seed of the shuffle.

    Returns:
        ``{case: split}``.
    """
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for modality in sorted(cases["modality"].unique()):
        ids = sorted(cases.loc[cases["modality"] == modality, "case"].unique())
        order = list(rng.permutation(len(ids)))
        n_test = int(round(test_fraction * len(ids)))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        for rank, position in enumerate(order):
            assignment[ids[position]] = "test" if rank < n_test else "train"
    return assignment


def build_index(
    slice_dirs: Sequence[str | Path],
    masks_out: str | Path,
    images_out: str | Path,
    *,
    test_fraction: float,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combine per-case manifests into the masks and images tables.

    Paths in the tables are relative to the working directory (the folder the
    workflow runs in), e.g. ``results/slices/<case>/images/<name>.png``.

    Raises:
        DataError: a manifest is missing, or no masks at all were kept.
    """
    frames = []
    for folder in map(Path, slice_dirs):
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{manifest}: slice manifest not found (did the slice stage finish?)")
        frame = pd.read_parquet(manifest)
        frame["image"] = [str(folder / p) for p in frame["image"]]
        frame["mask"] = [str(folder / p) for p in frame["mask"]]
        frames.append(frame)
    masks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if masks.empty:
        raise DataError("no masks survived slicing and filtering: check slicing.min_mask_fraction and the label maps")
    splits = split_cases(masks[["case", "modality"]].drop_duplicates(), test_fraction, seed)
    masks["split"] = masks["case"].map(splits)
    masks = masks.sort_values(["case", "axis", "slice", "class_id", "instance"]).reset_index(drop=True)
    images = (
        masks.groupby(["image", "dataset", "modality", "case", "axis", "slice", "height", "width", "split"], as_index=False)
        .size()
        .rename(columns={"size": "n_masks"})[IMAGE_COLUMNS]
    )
    for table, out in ((masks, masks_out), (images, images_out)):
        with atomic_path(out) as tmp:
            table.to_parquet(tmp, index=False)
    log.info(
        "index: %d cases, %d images, %d masks; test cases: %s",
        masks["case"].nunique(), len(images), len(masks), sorted(c for c, s in splits.items() if s == "test"),
    )
    return masks, images
