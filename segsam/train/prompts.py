"""Corrective clicks for interactive training (SAM-style), after a first box or point prompt.

The first prompt of each mask (box or point) comes from
:mod:`segsam.data.prompts`. Corrective clicks (:func:`error_clicks`) follow the
interactive setting of SAM and SAM-Med2D: after a prediction, one click goes to
the centre of the largest error, positive in a missed region (false negative),
negative in a spurious one (false positive). "Centre" is the error pixel
farthest from the error's edge (Euclidean distance transform; of several, the
middle one in raster order), which needs no random draw: the click depends on
the prediction only, and a change of a few boundary pixels does not move it.
Coordinates are SAM's (x, y) pixels. :func:`add_error_clicks` runs the rounds
of corrections of a training batch with the model being trained.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from segsam.models.segsam_net import PromptableModel

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


def add_error_clicks(
    model: PromptableModel,
    embeddings: torch.Tensor,
    is_point: np.ndarray,
    boxes: np.ndarray,
    points: np.ndarray,
    targets: torch.Tensor,
    text: torch.Tensor | None,
    rounds: int,
    image_index: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``rounds`` interactive corrections of N prompts (SAM-style clicks).

    Round r predicts with the clicks of rounds < r (without gradients), then
    adds one click at the centre of the largest error (:func:`error_clicks`).
    Clicks not yet placed are "not a point" tokens (label -1), so every round
    has the same number of tokens and all rounds go through one batched
    forward pass for the loss.

    Args:
        model: The model being trained (not a DDP wrapper).
        embeddings: N x 256 x h x w, or B x 256 x h x w with ``image_index``.
        is_point: N bool.
        boxes: N x 4.
        points: N x 2.
        targets: N x 1 x S x S float ground truth.
        text: C x d_text class text embeddings, or None.
        rounds: R >= 1.
        image_index: N long, the image of each prompt (see
            :meth:`PromptableModel.forward`), or None.

    Returns:
        ((R + 1) N x R x 2 click coordinates, (R + 1) N x R labels): round 0
        (no click) first, then each round's prompts with their clicks so far.
    """
    num = len(is_point)
    coords = np.zeros((num, rounds, 2), np.float32)
    labels = np.full((num, rounds), NO_CLICK, np.int64)
    truth = targets[:, 0].detach().cpu().numpy() > 0.5
    all_coords, all_labels = [coords.copy()], [labels.copy()]
    with torch.no_grad():
        for r in range(rounds):
            out = model(
                embeddings,
                is_point,
                boxes,
                points,
                text,
                semantic=False,
                clicks=(coords, labels),
                image_index=image_index,
            )
            predicted = out.masks[:, 0].float().cpu().numpy() > 0
            coords[:, r], labels[:, r] = error_clicks(predicted, truth)
            all_coords.append(coords.copy())
            all_labels.append(labels.copy())
    return np.concatenate(all_coords), np.concatenate(all_labels)
