"""SAWD's class head fitted again to the trained model's features, after the last step.

During a short run SAWD's class head trails the features it reads: on the
demo's 20 steps it names little but the two most frequent classes, although a
linear probe on the same SO-token features names most test objects right.
Decoupling the classifier from the representation (Kang et al., ICLR 2020,
classifier re-training) fixes that at the end: the head, and only the head, is
fitted to the SO-token features of the training objects, each prompted by its
tight box and by one of its pixels (the evaluation's two prompt kinds), with
the rest of the trained model fixed. The masks of SAGD and SAWD do not
change, so the binary scores do not either.

Full-batch Adam on the features held in memory: ``REFIT_STEPS`` steps at
``REFIT_LR`` from the trained head, cross-entropy over the global vocabulary
(classes without a training object are only pushed down).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segsam.data.prompts import mask_box, random_point
from segsam.models.segsam_net import PromptableModel
from segsam.train.batch import TrainImage

#: Full-batch Adam steps and learning rate of the refit (the features of a few thousand objects fit in seconds).
REFIT_STEPS = 300
REFIT_LR = 1e-3
#: Prompts decoded per pass of SAWD (the only decoder the refit runs): each carries its own copy of the image
#: embedding through SAWD's transformer, so a slice's objects go in chunks to keep memory flat.
PROMPTS_PER_PASS = 4


@dataclass(frozen=True)
class RefitResult:
    """What the refit saw and reached.

    Attributes:
        images: Training slices whose objects were read.
        objects: Objects the head was fitted to (two prompts each).
        classes: Distinct classes among them.
        train_acc: Share of those prompts the fitted head names right.
    """

    images: int
    objects: int
    classes: int
    train_acc: float


def object_prompts(item: TrainImage, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two prompts per object of a slice, the two kinds of the evaluation: its tight box, then one of its pixels.

    Returns:
        (2M is_point, 2M x 4 boxes, 2M x 2 points), the M boxes first.
    """
    masks = [mask.numpy() for mask in item.masks]
    boxes = np.stack([mask_box(mask) for mask in masks])
    points = np.stack([random_point(mask, rng) for mask in masks])
    n = len(masks)
    is_point = np.repeat([False, True], n)
    return is_point, np.concatenate([boxes, np.zeros_like(boxes)]), np.concatenate([np.zeros_like(points), points])


@torch.inference_mode()
def class_head_inputs(
    model: PromptableModel,
    items: Sequence[TrainImage],
    embeddings: Callable[[TrainImage], torch.Tensor],
    text: torch.Tensor | None,
    device: torch.device,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAWD's class-head input for every object of ``items``, prompted by its box and by a point.

    Args:
        model: A model with SAWD's prompted branch.
        items: The slices.
        embeddings: An item's 1 x D x h x w image embedding (or its image, for a model that encodes).
        text: C x d_text class text (T2VSE), or None.
        device: Where the model runs.
        rng: Draws the points.

    Returns:
        (N x D features, N class indices), two rows per object of ``items``.
    """
    captured: list[torch.Tensor] = []
    hook = model.sawd.class_head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    was_training = model.training
    model.eval()
    try:
        for item in items:
            is_point, boxes, points = object_prompts(item, rng)
            embedding = embeddings(item).to(device)
            if embedding.shape[1] == 3:  # an image, for a model whose encoder trains
                embedding = model.encode(embedding)
            context = model.image_context(embedding, text)  # T2VSE and SAWD's unprompted branch once per slice
            for start in range(0, len(is_point), PROMPTS_PER_PASS):
                part = slice(start, start + PROMPTS_PER_PASS)
                index = np.zeros(len(is_point[part]), np.int64)
                model.semantic_decode(context, is_point[part], boxes[part], points[part], index)
    finally:
        hook.remove()
        model.train(was_training)
    classes = np.concatenate([np.tile(np.asarray(item.classes, np.int64), 2) for item in items])
    return torch.cat(captured).float(), torch.from_numpy(classes).to(device)


def fit_head(head: nn.Module, features: torch.Tensor, classes: torch.Tensor) -> float:
    """Fit ``head`` (in place) to map N x D ``features`` to N ``classes``; returns its accuracy on them."""
    optimiser = torch.optim.Adam(head.parameters(), lr=REFIT_LR)
    with torch.enable_grad():
        for _ in range(REFIT_STEPS):
            optimiser.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(head(features), classes).backward()
            optimiser.step()
    with torch.no_grad():
        return float((head(features).argmax(1) == classes).float().mean())


def refit_class_head(
    model: PromptableModel,
    items: Sequence[TrainImage],
    embeddings: Callable[[TrainImage], torch.Tensor],
    text: torch.Tensor | None,
    device: torch.device,
    rng: np.random.Generator,
) -> RefitResult:
    """Fit SAWD's class head to the model's features of the training objects.

    Args:
        model: A model with SAWD's prompted branch (trained).
        items: Training slices (with at least one object).
        embeddings: An item's 1 x D x h x w image embedding (or its image, for a model that encodes).
        text: C x d_text class text (T2VSE), or None.
        device: Where the model runs.
        rng: Draws the point prompts.

    Returns:
        The refit's figures.

    Raises:
        ValueError: If the model has no SAWD prompted branch or ``items`` hold no object.
    """
    if getattr(model, "sawd", None) is None or not model.sawd.prompted:
        raise ValueError("the class-head refit needs SAWD's prompted branch")
    if not any(len(item.classes) for item in items):
        raise ValueError("the class-head refit needs training objects; got none")
    features, classes = class_head_inputs(model, items, embeddings, text, device, rng)
    train_acc = fit_head(model.sawd.class_head, features.clone(), classes.clone())  # clones: out of inference mode
    return RefitResult(len(items), len(classes) // 2, int(classes.unique().numel()), train_acc)
