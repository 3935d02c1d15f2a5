"""Test prompts: generated once per test mask, saved, reused by every method.

Each test mask gets one box (tight bounding box, optionally jittered) and one
point (a foreground pixel) in the slice's own pixel coordinates. The random
draws of a mask come from a generator seeded by (evaluation seed, mask path),
so a mask's prompts do not change when other masks are added or removed, and
every method is scored on exactly the same prompts (paired comparison).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segsam.atomic import atomic_path
from segsam.data.io import read_png
from segsam.data.prompts import jitter_box, mask_box, random_point
from segsam.errors import DataError

log = logging.getLogger(__name__)

PROMPT_COLUMNS = [
    "mask",
    "image",
    "case",
    "modality",
    "axis",
    "slice",
    "class_id",
    "class_name",
    "prompt",
    "x0",
    "y0",
    "x1",
    "y1",
    "px",
    "py",
    "spacing_mm",
]


def mask_rng(seed: int, mask_path: str) -> np.random.Generator:
    """A generator that depends only on the seed and the mask's path."""
    digest = hashlib.sha256(f"{seed}:{mask_path}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_test_prompts(
    masks_parquet: str | Path, out_parquet: str | Path, *, evaluate_cfg: Mapping[str, Any]
) -> pd.DataFrame:
    """Write one row per (test mask, prompt type) with box and point coordinates."""
    table = pd.read_parquet(masks_parquet)
    test = table[table["split"] == "test"]
    if test.empty:
        raise DataError(f"{masks_parquet}: the test split is empty")
    rows = []
    for record in test.itertuples(index=False):
        mask = read_png(record.mask) > 0
        rng = mask_rng(int(evaluate_cfg["seed"]), record.mask)
        box = jitter_box(mask_box(mask), int(evaluate_cfg["box_jitter_px"]), mask.shape, rng)
        point = random_point(mask, rng)
        for prompt in evaluate_cfg["prompts"]:
            rows.append(
                {
                    "mask": record.mask,
                    "image": record.image,
                    "case": record.case,
                    "modality": record.modality,
                    "axis": record.axis,
                    "slice": int(record.slice),
                    "class_id": int(record.class_id),
                    "class_name": record.class_name,
                    "prompt": prompt,
                    "x0": box[0],
                    "y0": box[1],
                    "x1": box[2],
                    "y1": box[3],
                    "px": point[0],
                    "py": point[1],
                    "spacing_mm": float(record.spacing_mm),
                }
            )
    prompts = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
    with atomic_path(out_parquet) as tmp:
        prompts.to_parquet(tmp, index=False)
    log.info("%d test masks, %d prompts", len(test), len(prompts))
    return prompts
