"""Prompt geometry from a mask: its tight box, a jittered box, a random foreground point.

Training draws its prompts with these and the evaluation saves its test
prompts with them, so both stages share one definition. Coordinates follow
SAM: (x, y) pixels; boxes (x0, y0, x1, y1) with inclusive pixel extents.
Every random function takes an explicit ``numpy.random.Generator``, so prompts
are deterministic given the seed.
"""

from __future__ import annotations

import numpy as np


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight bounding box of a non-empty H x W mask as float32 (x0, y0, x1, y1).

    Raises:
        ValueError: if the mask is empty.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot prompt an empty mask")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def jitter_box(box: np.ndarray, max_px: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Move each box edge by up to ``max_px`` pixels, keeping it valid and inside ``shape`` (H, W)."""
    if max_px <= 0:
        return box.astype(np.float32)
    height, width = shape
    x0, y0, x1, y1 = box + rng.integers(-max_px, max_px + 1, size=4)
    x0, x1 = np.clip([x0, x1], 0, width - 1)
    y0, y1 = np.clip([y0, y1], 0, height - 1)
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], dtype=np.float32)


def random_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn foreground pixel of a non-empty mask as float32 (x, y).

    Raises:
        ValueError: if the mask is empty.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot prompt an empty mask")
    pick = int(rng.integers(ys.size))
    return np.array([xs[pick], ys[pick]], dtype=np.float32)
