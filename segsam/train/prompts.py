"""Prompt simulation (SPEC §2): a box or a foreground point per mask, then optional corrective clicks.

Coordinates follow SAM: (x, y) pixels, boxes (x0, y0, x1, y1) with inclusive
pixel extents. Every random function takes an explicit
``numpy.random.Generator`` so that prompts are deterministic given the seed.

Corrective clicks (:func:`error_clicks`) follow the interactive setting of SAM
and SAM-Med2D: after a prediction, one click goes to the centre of the largest
error, positive in a missed region (false negative), negative in a spurious one
(false positive). "Centre" is the error pixel farthest from the error's edge
(Euclidean distance transform; of several, the middle one in raster order),
which needs no random draw: the click depends
on the prediction only, and a change of a few boundary pixels does not move it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Click labels, as SAM's prompt encoder reads them.
POSITIVE, NEGATIVE, NO_CLICK = 1, 0, -1


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


def error_click(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, int]:
    """One corrective click for an H x W prediction of an H x W target mask.

    Args:
        prediction: H x W bool, the predicted mask.
        target: H x W bool, the ground truth.

    Returns:
        ((x, y) float32, label): :data:`POSITIVE` at the innermost pixel of the
        missed region when it is deeper than the spurious one, else
        :data:`NEGATIVE` at the innermost spurious pixel; ``((0, 0), NO_CLICK)``
        when the prediction is exact (SAM ignores such a point).

    Raises:
        ValueError: if the shapes differ.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    best = (0.0, np.zeros(2, np.float32), NO_CLICK)
    for region, label in ((target & ~prediction, POSITIVE), (prediction & ~target, NEGATIVE)):
        if not region.any():
            continue
        # pad so that the image border counts as the error's edge
        depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        deepest = np.argwhere(depth == depth.max())  # raster order; the middle one of a ridge
        y, x = deepest[len(deepest) // 2]
        if depth[y, x] > best[0]:
            best = (float(depth[y, x]), np.array([x, y], np.float32), label)
    return best[1], best[2]


def error_clicks(predictions: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`error_click` for a batch.

    Args:
        predictions: N x H x W bool.
        targets: N x H x W bool.

    Returns:
        (N x 2 float32 (x, y), N int64 labels).
    """
    coords = np.zeros((len(predictions), 2), np.float32)
    labels = np.full(len(predictions), NO_CLICK, np.int64)
    for i, (prediction, target) in enumerate(zip(predictions, targets, strict=True)):
        coords[i], labels[i] = error_click(prediction, target)
    return coords, labels
