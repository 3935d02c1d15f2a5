"""From per-plane probabilities to one label volume: the overlap rule.

Prompted methods: every prompt gives a foreground probability per voxel (SAGD's
sigmoid); a class's probability is the highest of its prompts'. A voxel takes the
class of highest probability among the classes whose probability is at least the
threshold (``evaluate.threshold``, 0.5), ties going to the lowest class id, and
background (0) when no class reaches it. :class:`LabelBuilder` applies the rule as
the prompts come in, in any order, with the same result.

Prompt-free networks: the argmax over their C + 1 channels (background and every
class) of the softmax probabilities, mapped back onto the input grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PROMPT_FREE_RULE", "LabelBuilder", "prompted_rule"]

#: The overlap rule of prompt-free networks, as the sidecar states it.
PROMPT_FREE_RULE = (
    "argmax over the C + 1 channels (background and every vocabulary class) of the network's softmax "
    "probabilities, resampled onto the input grid"
)


def prompted_rule(threshold: float) -> str:
    """The overlap rule of prompted methods, as the sidecar states it."""
    return (
        f"a voxel takes the class of highest probability among the classes with probability >= {threshold:g} "
        "(ties: the lowest class id), else 0; a class's probability is the highest of its prompts' "
        "(SAGD mask sigmoid), resampled onto the input grid"
    )


class LabelBuilder:
    """The label volume on the LPS grid, built plane by plane.

    Args:
        shape: (Z, H, W) of the LPS grid.
        threshold: Foreground probability a class needs (prompted methods).
        keep_probabilities: Also keep each class's probability planes (for
            ``--probabilities``; costs 4 bytes per voxel of each prompted plane, and
            for prompt-free networks 2 bytes per voxel and class).
    """

    def __init__(self, shape: tuple[int, int, int], threshold: float, keep_probabilities: bool = False) -> None:
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"expected a Z x H x W shape, got {shape}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        self.shape = tuple(int(v) for v in shape)
        self.threshold = float(threshold)
        self.keep_probabilities = keep_probabilities
        self.label = np.zeros(self.shape, dtype=np.uint16)
        self._best: dict[int, np.ndarray] = {}
        self._class_planes: dict[int, dict[int, np.ndarray]] = {}
        self._semantic: dict[int, np.ndarray] = {}
        self._semantic_ids: np.ndarray | None = None

    def add(self, z: int, class_id: int, probability: np.ndarray) -> None:
        """One prompt's H x W probabilities on plane ``z`` (prompted methods)."""
        probability = np.asarray(probability, dtype=np.float32)
        best = self._best.setdefault(z, np.zeros(self.shape[1:], dtype=np.float32))
        label = self.label[z]
        higher = (probability > best) | ((probability == best) & (class_id < label))
        hit = (probability >= self.threshold) & higher
        label[hit] = class_id
        best[hit] = probability[hit]
        if self.keep_probabilities:
            planes = self._class_planes.setdefault(class_id, {})
            planes[z] = probability if z not in planes else np.maximum(planes[z], probability)

    def add_semantic(self, z: int, probabilities: np.ndarray, class_ids: list[int]) -> None:
        """A prompt-free network's (C + 1) x H x W probabilities on plane ``z``.

        Args:
            z: The plane.
            probabilities: Channel 0 background, channel k + 1 class ``class_ids[k]``.
            class_ids: The vocabulary ids, in the model's class order.
        """
        lookup = np.array([0, *class_ids], dtype=np.uint16)
        self.label[z] = lookup[np.asarray(probabilities).argmax(0)]
        if self.keep_probabilities:
            self._semantic[z] = np.asarray(probabilities[1:], dtype=np.float16)
            self._semantic_ids = np.asarray(class_ids)

    def present(self) -> list[int]:
        """The class ids the label holds, ascending."""
        return [int(v) for v in np.unique(self.label) if v != 0]

    def probability_classes(self) -> list[int]:
        """Classes with a probability volume: those prompted (prompted), or present (prompt-free)."""
        if not self.keep_probabilities:
            return []
        return sorted(self._class_planes) if self._class_planes else self.present()

    def probability(self, class_id: int) -> np.ndarray:
        """Z x H x W float32 probabilities of one class (0 on planes it was not prompted on)."""
        volume = np.zeros(self.shape, dtype=np.float32)
        if class_id in self._class_planes:
            for z, plane in self._class_planes[class_id].items():
                volume[z] = plane
        elif self._semantic_ids is not None and class_id in self._semantic_ids:
            channel = int(np.flatnonzero(self._semantic_ids == class_id)[0])
            for z, planes in self._semantic.items():
                volume[z] = planes[channel]
        return volume
