"""How large the embedding cache of a run will be, and the stop when it exceeds ``cache.max_gb``.

Each cached slice holds one ``256 x h x w`` float16 embedding (:mod:`segsam.embed.encode`):
``h = w = S / 4`` for LiteMedSAM's TinyViT (64 x 64 at S = 256, 2 MiB a slice) and
``S / 16`` for SAM's ViT-B (16 x 16, 128 KiB). The number of slices is the index's
images table, so the size is known once the index is built: the workflow prints it at
plan time when the index exists and stops there past the limit. A first run has no index
when it plans, so each ``embed_images`` job also checks the cache folder before it
encodes (:func:`check_room`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from segsam.errors import ConfigError

__all__ = ["EMBED_DIM", "PATCH", "embedding_bytes", "CacheBudget", "cache_budget", "check_room"]

#: Channels of every encoder's embedding (SAM's neck).
EMBED_DIM = 256
#: Input pixels per embedding pixel, per encoder.
PATCH = {"tiny_vit": 4, "vit_b": 16}
_BYTES = 2  # float16
#: The way out of a cache past ``cache.max_gb``, in both stops.
_WHAT_TO_DO = (
    "raise cache.max_gb if the disk holds it, or set cache.enabled: false to encode the images as they are read "
    "(docs/training.md#cache)"
)


def embedding_bytes(encoder: str, image_size: int) -> int:
    """Bytes of one slice's cached embedding.

    Raises:
        ValueError: An unknown encoder.
    """
    if encoder not in PATCH:
        raise ValueError(f"unknown encoder {encoder!r}; known: {', '.join(PATCH)}")
    side = image_size // PATCH[encoder]
    return EMBED_DIM * side * side * _BYTES


@dataclass(frozen=True)
class CacheBudget:
    """The cache a run would write: slices, GB per encoder, the total and the limit."""

    slices: int
    gb: dict[str, float]
    max_gb: float

    @property
    def total_gb(self) -> float:
        return sum(self.gb.values())

    @property
    def line(self) -> str:
        """One line for the log: what the cache will hold and the limit."""
        parts = ", ".join(f"{name} {gb:.2f} GB" for name, gb in self.gb.items())
        return (
            f"embedding cache: {self.slices} slices -> {parts} ({self.total_gb:.2f} GB of cache.max_gb {self.max_gb:g})"
        )


def cache_budget(images_parquet: str | Path, encoders: Sequence[str], image_size: int, max_gb: float) -> CacheBudget:
    """The size of the cache of ``encoders`` over every slice of the index.

    Args:
        images_parquet: The index's images table (one row per slice); only its row count is read.
        encoders: The frozen encoders whose cache the run reads.
        image_size: Side S of the model input.
        max_gb: ``cache.max_gb``.

    Raises:
        ConfigError: When the cache would exceed ``max_gb`` (one line saying what to do).
    """
    slices = pq.ParquetFile(images_parquet).metadata.num_rows
    gb = {name: slices * embedding_bytes(name, image_size) / 1e9 for name in encoders}
    budget = CacheBudget(slices, gb, float(max_gb))
    if budget.total_gb > budget.max_gb:
        raise ConfigError(f"{images_parquet}: {budget.line}: over the limit; {_WHAT_TO_DO}")
    return budget


def check_room(out_npy: str | Path, slices: int, encoder: str, image_size: int, max_gb: float) -> None:
    """Stop an embed job whose case would take its cache folder past ``max_gb``.

    The folder's other cases (the ``.npy`` files on disk) plus this case's ``slices``. Jobs
    running side by side may each pass it: the cache can end at most their cases past the limit.

    Args:
        out_npy: The case's embeddings file, in the encoder's cache folder.
        slices: The case's slices.
        encoder: Encoder name (:data:`PATCH`).
        image_size: Side S of the model input.
        max_gb: ``cache.max_gb``.

    Raises:
        ConfigError: Past the limit (one line naming the folder and what to do).
    """
    out_npy = Path(out_npy)
    others = [p for p in out_npy.parent.glob("*.npy") if p.name != out_npy.name] if out_npy.parent.is_dir() else []
    gb = (sum(p.stat().st_size for p in others) + slices * embedding_bytes(encoder, image_size)) / 1e9
    if gb > max_gb:
        raise ConfigError(
            f"{out_npy.parent}: embedding cache would reach {gb:.2f} GB with {out_npy.stem} ({slices} slices), "
            f"over cache.max_gb {max_gb:g}; {_WHAT_TO_DO}"
        )
