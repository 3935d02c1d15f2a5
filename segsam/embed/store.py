"""Read access to the image-embedding cache (format in :mod:`segsam.embed`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segsam.errors import DataError


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
    resident memory (docs/performance.md).

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
