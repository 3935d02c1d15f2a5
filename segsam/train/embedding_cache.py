"""Image-embedding cache: each (slice, encoder weights) is encoded exactly once.

Methods whose image encoder is frozen (all methods of the demo) never run the
encoder while training or evaluating: they read these files. One cache entry
per case, ``<cache_dir>/<case>.npy`` (N x 256 x h x w, float16: 64 x 64 for
LiteMedSAM's TinyViT, 16 x 16 for SAM ViT-B at 256) beside
``<cache_dir>/<case>.parquet`` (the N slice images, in row order, with the
encoder tag and their original sizes). The folder name carries the encoder tag
(``<weights name>-<sha256[:8]>``), so different weights never share entries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path
from segsam.data.io import read_png
from segsam.data.slicing import MANIFEST
from segsam.errors import DataError
from segsam.models.build import EMBEDDING_SIZE, build_image_encoder
from segsam.models.preprocess import encoder_input
from segsam.models.weights import resolve_weights

log = logging.getLogger(__name__)


def encode_case(
    slice_dir: str | Path,
    out_npy: str | Path,
    out_table: str | Path,
    *,
    encoder_cfg: Mapping[str, Any],
    threads: int = 1,
) -> int:
    """Encode every image of one sliced case with a frozen image encoder.

    Args:
        slice_dir: Output folder of the slice stage for the case.
        out_npy: N x 256 x h x w float16 embeddings.
        out_table: Parquet with columns ``row``, ``image`` (path as in the
            index), ``height``, ``width``.
        encoder_cfg: :func:`segsam.config.encoder_settings` of the encoder.
        threads: torch intra-op threads (the rule's ``threads``).

    Returns:
        The number of slices encoded.
    """
    torch.set_num_threads(max(1, threads))
    slice_dir = Path(slice_dir)
    manifest = pd.read_parquet(slice_dir / MANIFEST)
    images = sorted(manifest["image"].unique())
    checkpoint = resolve_weights(encoder_cfg["weights"], encoder_cfg["sha256"])
    name = str(encoder_cfg["name"])
    encoder = build_image_encoder(name, checkpoint)
    batch_size = int(encoder_cfg["batch_size"])
    chunks: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(encoder_cfg["bf16"])):
        for first in tqdm(
            range(0, len(images), batch_size), desc=f"encode {slice_dir.name}", unit="batch", mininterval=2.0
        ):
            batch = []
            for rel in images[first : first + batch_size]:
                tensor, info = encoder_input(read_png(slice_dir / rel), int(encoder_cfg["image_size"]), name)
                batch.append(tensor)
                sizes.append(info.original)
            chunks.append(encoder(torch.stack(batch)).float().numpy().astype(np.float16))
    side = EMBEDDING_SIZE[name]
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 256, side, side), np.float16)
    elapsed = time.perf_counter() - start
    with atomic_path(out_npy) as tmp:
        np.save(tmp, embeddings)
    table = pd.DataFrame(
        {
            "row": np.arange(len(images)),
            "image": [str(slice_dir / rel) for rel in images],
            "height": [h for h, _ in sizes],
            "width": [w for _, w in sizes],
        }
    )
    with atomic_path(out_table) as tmp:
        table.to_parquet(tmp, index=False)
    log.info(
        "%s: encoded %d slices in %.1f s (%.2f s/slice)",
        slice_dir.name,
        len(images),
        elapsed,
        elapsed / max(1, len(images)),
    )
    return len(images)


@dataclass(frozen=True)
class CachedArray:
    """Where one case's ``.npy`` embedding array lies on disk, for reading single rows.

    Attributes:
        path: The ``.npy`` file.
        offset: Byte offset of the data (after the header).
        shape: N x 256 x h x w.
        dtype: Element type (float16).
    """

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def open(cls, path: Path) -> CachedArray:
        """Read the header of a C-ordered ``.npy`` file.

        Raises:
            DataError: When the file is not a readable C-ordered ``.npy`` array.
        """
        try:
            with open(path, "rb") as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(stream)
                offset = stream.tell()
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path}: not a readable .npy embedding array ({err}); rerun the embed_images rule"
            ) from err
        if fortran_order or len(shape) != 4:
            raise DataError(
                f"{path}: expected a C-ordered N x C x h x w array, got shape {shape}; rerun the embed_images rule"
            )
        return cls(path, offset, tuple(shape), np.dtype(dtype))

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * self.dtype.itemsize


@dataclass
class EmbeddingStore:
    """Read access to the cached embeddings of several cases.

    Rows are read with plain file reads, not a memory map: a training epoch
    touches every cached slice, and mapped pages would stay in the process's
    resident memory (on the demo, about 1 GB more for SEG-SAM's training job).

    Attributes:
        rows: ``{image path: (case, row)}``.
        arrays: ``{case: where its N x 256 x h x w float16 array lies}``.
    """

    rows: dict[str, tuple[str, int]]
    arrays: dict[str, CachedArray]

    @classmethod
    def open(cls, cache_dir: str | Path, cases: Iterable[str]) -> EmbeddingStore:
        """Index the cache entries of ``cases``.

        Raises:
            DataError: When a case's ``.npy`` or ``.parquet`` is missing or unreadable.
        """
        cache_dir = Path(cache_dir)
        rows: dict[str, tuple[str, int]] = {}
        arrays: dict[str, CachedArray] = {}
        for case in sorted(set(cases)):
            npy, table = cache_dir / f"{case}.npy", cache_dir / f"{case}.parquet"
            if not npy.is_file() or not table.is_file():
                raise DataError(f"{npy}: embedding cache entry missing (run the embed_images rule)")
            arrays[case] = CachedArray.open(npy)
            for row, image in pd.read_parquet(table)[["row", "image"]].itertuples(index=False):
                if not 0 <= int(row) < arrays[case].shape[0]:
                    raise DataError(f"{table}: row {row} of {image} is outside {npy} ({arrays[case].shape[0]} rows)")
                rows[image] = (case, int(row))
        return cls(rows, arrays)

    def get(self, images: list[str]) -> torch.Tensor:
        """Embeddings of ``images`` as a B x 256 x h x w float32 tensor.

        Raises:
            DataError: When a slice has no cached embedding or its file is truncated.
        """
        out = []
        for image in images:
            try:
                case, row = self.rows[image]
            except KeyError:
                raise DataError(f"{image}: no cached embedding for this slice") from None
            array = self.arrays[case]
            with open(array.path, "rb") as stream:
                stream.seek(array.offset + row * array.row_bytes)
                data = stream.read(array.row_bytes)
            if len(data) != array.row_bytes:
                raise DataError(f"{array.path}: truncated at row {row}; rerun the embed_images rule")
            out.append(np.frombuffer(data, dtype=array.dtype).reshape(array.shape[1:]).astype(np.float32))
        return torch.from_numpy(np.stack(out))
