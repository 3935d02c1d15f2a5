"""Training slices read as they are needed: :class:`TrainSlices`, :class:`EpochShard` and :func:`train_loader`.

Every training run streams its slices: nothing is held per slice but where
its files are, so memory does not grow with the train split (SA-Med2D-16M has
3.7 M training images; their masks alone would be hundreds of GB in memory).

* :class:`TrainSlices` is a map-style dataset over the train split's masks
  table: item ``i`` is image ``i``'s masks (read from their PNGs, in the model
  frame) and classes, and, when the method reads images (its encoder trains,
  the embedding cache is off, or a prompt-free network), the image's model input.
  Paths and classes are kept in Arrow and numpy buffers, not Python objects,
  so forked DataLoader workers share them instead of copying them page by page.
* :class:`EpochShard` is the batch sampler of one process: the images of each
  step of the epoch that are this rank's (``rank, rank + world, ...`` of the
  global batch), from any step on, so an interrupted epoch resumes exactly.
* :func:`train_loader` puts the two in a ``torch.utils.data.DataLoader`` with
  ``train.workers`` worker processes and pinned memory on CUDA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from segsam.data.io import read_png
from segsam.data.vocabulary import Vocabulary
from segsam.models.preprocess import ResizeInfo, encoder_input, prepare_image
from segsam.train.batch import TrainImage

__all__ = ["PIXELS", "TrainSlices", "EpochShard", "train_loader", "prompt_rng", "load_train_images"]

#: What an item carries besides its masks: nothing (the embedding cache serves the image), the
#: input of an image encoder (``tiny_vit`` / ``vit_b``), or a prompt-free network's input (``plain``).
PIXELS = (None, "tiny_vit", "vit_b", "plain")


class TrainSlices(Dataset):
    """The images of a masks table, each read when asked for (a map-style torch dataset).

    Args:
        masks: One row per mask (columns ``image``, ``mask``, ``class_id``,
            ``height``, ``width``), e.g. the index's train split.
        vocabulary: Maps ``class_id`` to the class index ``0..C-1``.
        size: Side S of the square model frame.
        pixels: What else an item carries (:data:`PIXELS`).

    Raises:
        ValueError: An empty table, or ``pixels`` not one of :data:`PIXELS`.
    """

    def __init__(self, masks: pd.DataFrame, vocabulary: Vocabulary, size: int, pixels: str | None = None) -> None:
        if masks.empty:
            raise ValueError("no masks to train on")
        if pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
        table = masks.sort_values(["image", "mask"], kind="stable")
        images = table["image"].to_numpy()
        starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
        self.offsets = np.r_[starts, len(table)].astype(np.int64)
        self.images = pa.array(images[starts].astype(str))
        self.mask_paths = pa.array(table["mask"].to_numpy().astype(str))
        index = vocabulary.class_index
        self.classes = np.array([index[int(c)] for c in table["class_id"]], dtype=np.int64)
        self.shapes = np.stack([table["height"].to_numpy()[starts], table["width"].to_numpy()[starts]], 1).astype(
            np.int32
        )
        self.size = int(size)
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> TrainImage:
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        image = self.images[i].as_py()
        info = ResizeInfo.for_shape(int(self.shapes[i, 0]), int(self.shapes[i, 1]), self.size)
        masks = np.stack([read_png(self.mask_paths[j].as_py()) > 0 for j in range(start, stop)])
        return TrainImage(
            image=image,
            masks=info.mask_to_model(masks),
            classes=self.classes[start:stop].copy(),
            pixels=self._pixels(image),
        )

    def _pixels(self, image: str) -> torch.Tensor | None:
        """3 x S x S model input of the image, or None when the cache serves it."""
        if self.pixels is None:
            return None
        if self.pixels == "plain":
            return prepare_image(read_png(image), self.size)[0]
        return encoder_input(read_png(image), self.size, self.pixels)[0]


@dataclass(frozen=True)
class EpochShard:
    """One process's share of each step of an epoch: a batch sampler.

    Step ``b`` takes the global batch ``order[b * batch_size : (b + 1) * batch_size]``;
    this rank reads positions ``rank, rank + world, ...`` of it. Iteration
    starts at step ``start`` (a resumed epoch) and yields one list of dataset
    indices per step. Where the last global batch leaves this rank no image
    (fewer images than ranks), it reads the batch's first image as a stand-in
    (:meth:`stands_in`): DDP needs every rank in every step's all-reduce, and
    the trainer weighs that image's gradient 0.

    Args:
        order: The epoch's permutation of the dataset's indices.
        batch_size: Images per step over all processes.
        rank: This process's rank.
        world: The number of processes.
        start: The first step to yield.

    Raises:
        ValueError: A batch not divisible by ``world``, or a rank outside it.
    """

    order: Sequence[int]
    batch_size: int
    rank: int = 0
    world: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_size % self.world:
            raise ValueError(f"a global batch of {self.batch_size} images does not split over {self.world} processes")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not in a job of {self.world} processes")

    @property
    def steps(self) -> int:
        """Steps in the whole epoch."""
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def positions(self, step: int) -> list[int]:
        """This rank's positions in the epoch's order at step ``step`` (they seed each image's prompts)."""
        first = step * self.batch_size
        stop = min(first + self.batch_size, len(self.order))
        return list(range(first + self.rank, stop, self.world))

    def stands_in(self, step: int) -> bool:
        """Whether step ``step`` leaves this rank no image of its own."""
        return not self.positions(step)

    def read_positions(self, step: int) -> list[int]:
        """The positions this rank reads at step ``step``: its own, or the batch's first as a stand-in."""
        return self.positions(step) or [step * self.batch_size]

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield [int(self.order[p]) for p in self.read_positions(step)]


def prompt_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of the prompts of the image at ``position`` of epoch ``epoch``'s order.

    Seeded by where the image sits in the epoch, not by the process that reads
    it: one process and N processes draw the same prompts, and a resumed
    epoch draws what the interrupted one would have.
    """
    return np.random.default_rng([seed, epoch, position])


def load_train_images(masks: pd.DataFrame, vocabulary: Vocabulary, size: int = 256) -> list[TrainImage]:
    """Every image of a (small) masks table, read now: the held-out slices, tests."""
    slices = TrainSlices(masks, vocabulary, size)
    return [slices[i] for i in range(len(slices))]


def _as_list(items: list[TrainImage]) -> list[TrainImage]:
    return items


def train_loader(slices: TrainSlices, shard: EpochShard, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader yielding this rank's images of each step, as a list of :class:`TrainImage`.

    Args:
        slices: The dataset.
        shard: This rank's batches of the epoch (from its first unfinished step).
        workers: Worker processes reading ahead (0: read in this process).
        pin_memory: Pin the tensors (CUDA), so host-to-device copies run asynchronously.
    """
    return DataLoader(
        slices,
        batch_sampler=shard,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
    )
