"""Training slices and the prompts drawn for them: :class:`TrainImage`, :class:`PromptSet`, :class:`PromptBatch`.

Per image, :func:`simulate_prompts` picks up to ``masks_per_image`` of its
masks and prompts each by a box (tight box + jitter) or, with probability
``point_fraction``, one random foreground point. The classes of the image's
masks that were *not* prompted are the presence targets of SAWD's unprompted
branch (:func:`presence_targets`); SAWD's semantic variant (``sawd_sem``) learns
each image's full per-class masks instead (:func:`class_masks`).
:meth:`PromptBatch.gather` concatenates the
prompt sets of a micro-batch's images into what the model and its loss take.
Prompt-free networks learn each slice's label map (:func:`label_map`) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from segsam.data.prompts import jitter_box, mask_box, random_point

__all__ = [
    "TrainImage",
    "label_map",
    "PromptSet",
    "simulate_prompts",
    "presence_targets",
    "class_masks",
    "PromptBatch",
]


@dataclass
class TrainImage:
    """One training slice: its image (the cached-embedding key), its masks in the model frame and their classes.

    Attributes:
        image: The slice's PNG path, which keys its cached embedding.
        masks: M x S x S bool.
        classes: M class indices (vocabulary order, ``0..C-1``).
        pixels: 3 x S x S model input of the image when the method reads images
            (see :class:`segsam.train.stream.TrainSlices`); None when the cache serves it.
    """

    image: str
    masks: torch.Tensor
    classes: np.ndarray
    pixels: torch.Tensor | None = None

    def pin_memory(self) -> TrainImage:
        """The slice with its tensors in pinned memory (DataLoader's ``pin_memory``, on CUDA)."""
        pixels = None if self.pixels is None else self.pixels.pin_memory()
        return TrainImage(self.image, self.masks.pin_memory(), self.classes, pixels)


def label_map(item: TrainImage) -> torch.Tensor:
    """S x S long label map of one slice: 0 = background, k + 1 where an object of class k lies.

    The objects of a slice come from one label volume, so they do not overlap.
    """
    labels = torch.zeros(item.masks.shape[-2:], dtype=torch.long)
    for mask, k in zip(item.masks, item.classes):
        labels[mask] = int(k) + 1
    return labels


@dataclass(frozen=True)
class PromptSet:
    """The prompts drawn for one image: K of its masks, each prompted by a box or by one point.

    Attributes:
        masks: K x S x S bool, the prompted masks.
        is_point: K bool: a point prompt, else a box.
        boxes: K x 4 float32 (x0, y0, x1, y1); zero rows for point prompts.
        points: K x 2 float32 (x, y); zero rows for box prompts.
        chosen: K int, the indices of the prompted masks among the image's.
    """

    masks: torch.Tensor
    is_point: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    chosen: np.ndarray

    def __len__(self) -> int:
        return len(self.chosen)


def simulate_prompts(
    masks: torch.Tensor, k: int, jitter: int, point_fraction: float, rng: np.random.Generator
) -> PromptSet:
    """Pick up to ``k`` masks of one image and prompt each.

    The draws from ``rng`` (which masks, which prompt kinds, then each
    prompt's point or box jitter in mask order) make the training run's
    prompt stream: their order is part of the results.

    Args:
        masks: M x S x S bool, the image's masks.
        k: At most this many masks are prompted.
        jitter: Box jitter in pixels (:func:`segsam.data.prompts.jitter_box`).
        point_fraction: Probability of a point prompt instead of a box.
        rng: The prompt-sampling generator.

    Returns:
        The prompts of ``min(k, M)`` distinct masks.
    """
    chosen = rng.choice(masks.shape[0], size=min(k, masks.shape[0]), replace=False)
    is_point = rng.random(len(chosen)) < point_fraction
    boxes = np.zeros((len(chosen), 4), np.float32)
    points = np.zeros((len(chosen), 2), np.float32)
    size = masks.shape[-2:]
    for i, index in enumerate(chosen):
        mask = masks[index].numpy()
        if is_point[i]:
            points[i] = random_point(mask, rng)
        else:
            boxes[i] = jitter_box(mask_box(mask), jitter, tuple(size), rng)
    return PromptSet(
        masks=masks[torch.from_numpy(chosen)], is_point=is_point, boxes=boxes, points=points, chosen=chosen
    )


def presence_targets(item: TrainImage, chosen: np.ndarray, num_classes: int) -> torch.Tensor:
    """K x C: the classes of the image's masks that were not prompted (same row for every prompt)."""
    rest = np.setdiff1d(np.arange(len(item.classes)), chosen)
    row = torch.zeros(num_classes)
    row[torch.from_numpy(item.classes[rest])] = 1.0
    return row.expand(len(chosen), -1)


def class_masks(item: TrainImage, num_classes: int) -> torch.Tensor:
    """C x S x S float {0, 1}: the union of the slice's objects of each class (empty for absent classes)."""
    out = torch.zeros((num_classes, *item.masks.shape[-2:]))
    for mask, k in zip(item.masks, item.classes):
        out[int(k)][mask] = 1.0
    return out


@dataclass(frozen=True)
class PromptBatch:
    """The prompts of B images, concatenated in image order: the model's inputs and the loss targets.

    Attributes:
        targets: N x 1 x S x S float, the prompted masks.
        is_point: N bool: a point prompt, else a box.
        boxes: N x 4 float32 (x0, y0, x1, y1).
        points: N x 2 float32 (x, y).
        classes: N long, the class of each prompted mask (``[0, C)``).
        presence: N x C float, the classes of its image that were not prompted.
        image_index: N long: prompt i decodes image ``image_index[i]`` of the B
            (see :meth:`segsam.models.segsam_net.PromptableModel.forward`).
        class_masks: N x C x S x S float {0, 1}: every object of class k in the prompt's
            image (SAWD's ``sawd_sem`` branch); None for the methods without it.
    """

    targets: torch.Tensor
    is_point: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    classes: torch.Tensor
    presence: torch.Tensor
    image_index: torch.Tensor
    class_masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.is_point)

    @classmethod
    def gather(
        cls,
        items: Sequence[TrainImage],
        prompts: Sequence[PromptSet],
        num_classes: int,
        *,
        with_class_masks: bool = False,
    ) -> PromptBatch:
        """Concatenate the prompt sets of ``items`` (one each, same order).

        Args:
            items: B training images.
            prompts: The prompts drawn for each.
            num_classes: C, the vocabulary size.
            with_class_masks: Also give each prompt its image's per-class masks (``sawd_sem``).

        Raises:
            ValueError: If ``items`` and ``prompts`` differ in length.
        """
        if len(items) != len(prompts):
            raise ValueError(f"{len(items)} images but {len(prompts)} prompt sets")
        image_index = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor([len(p) for p in prompts]))
        per_image = torch.stack([class_masks(item, num_classes) for item in items]) if with_class_masks else None
        return cls(
            targets=torch.cat([p.masks for p in prompts]).unsqueeze(1).float(),
            is_point=np.concatenate([p.is_point for p in prompts]),
            boxes=np.concatenate([p.boxes for p in prompts]),
            points=np.concatenate([p.points for p in prompts]),
            classes=torch.from_numpy(np.concatenate([item.classes[p.chosen] for item, p in zip(items, prompts)])),
            presence=torch.cat([presence_targets(item, p.chosen, num_classes) for item, p in zip(items, prompts)]),
            image_index=image_index,
            class_masks=None if per_image is None else per_image[image_index],
        )

    def to(self, device: torch.device) -> PromptBatch:
        """The batch with its tensors on ``device`` (the numpy prompts stay)."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("targets", "classes", "presence", "image_index", "class_masks"):
            if moved[name] is not None:
                moved[name] = moved[name].to(device)
        return PromptBatch(**moved)

    def repeat(self, rounds: int) -> PromptBatch:
        """The batch ``rounds`` times over, one copy after the other (interactive rounds, N -> rounds N)."""
        return PromptBatch(
            targets=self.targets.repeat(rounds, 1, 1, 1),
            is_point=np.tile(self.is_point, rounds),
            boxes=np.tile(self.boxes, (rounds, 1)),
            points=np.tile(self.points, (rounds, 1)),
            classes=self.classes.repeat(rounds),
            presence=self.presence.repeat(rounds, 1),
            image_index=self.image_index.repeat(rounds),
            class_masks=None if self.class_masks is None else self.class_masks.repeat(rounds, 1, 1, 1),
        )
