"""Corrective clicks for interactive training (SAM-style), after a first box or point prompt.

The first prompt of each mask (box or point) comes from
:mod:`segsam.data.prompts`. Corrective clicks (:func:`error_clicks`) follow the
interactive setting of SAM and SAM-Med2D: after a prediction, one click goes to
the centre of the largest error, positive in a missed region (false negative),
negative in a spurious one (false positive). "Centre" is the error pixel
farthest from the error's edge (Euclidean distance transform; of several, the
middle one in raster order), which needs no random draw: the click depends on
the prediction only, and a change of a few boundary pixels does not move it.
Coordinates are SAM's (x, y) pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Click labels, as SAM's prompt encoder reads them.
POSITIVE, NEGATIVE, NO_CLICK = 1, 0, -1


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
