"""Image-embedding cache: each (slice, encoder weights) is encoded exactly once.

Methods whose image encoder is frozen (all methods of the demo) never run the
encoder while training or evaluating: they read these files. One cache entry
per case, ``<cache_dir>/<case>.npy`` (N x 256 x 64 x 64, float16) beside
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
import SimpleITK as sitk
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path
from segsam.data.io import read_png
from segsam.data.slicing import MANIFEST
from segsam.errors import DataError
from segsam.models.litemedsam import build_litemedsam
from segsam.models.preprocess import prepare_image
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
    """Encode every image of one sliced case with the frozen image encoder.

    Args:
        slice_dir: Output folder of the slice stage for the case.
        out_npy: N x 256 x 64 x 64 float16 embeddings.
        out_table: Parquet with columns ``row``, ``image`` (path as in the
            index), ``height``, ``width``.
        encoder_cfg: The ``encoder`` config section.
        threads: torch intra-op threads (the rule's ``threads``).

    Returns:
        The number of slices encoded.
    """
    torch.set_num_threads(max(1, threads))
    slice_dir = Path(slice_dir)
    manifest = pd.read_parquet(slice_dir / MANIFEST)
    images = sorted(manifest["image"].unique())
    checkpoint = resolve_weights(encoder_cfg["weights"], encoder_cfg["sha256"])
    model = build_litemedsam(checkpoint)
    encoder = model.image_encoder.eval()
    batch_size = int(encoder_cfg["batch_size"])
    chunks: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(encoder_cfg["bf16"])):
        for first in tqdm(range(0, len(images), batch_size), desc=f"encode {slice_dir.name}", unit="batch", mininterval=2.0):
            batch = []
            for rel in images[first : first + batch_size]:
                tensor, info = prepare_image(read_png(slice_dir / rel), size=int(encoder_cfg["image_size"]))
                batch.append(tensor)
                sizes.append(info.original)
            chunks.append(encoder(torch.stack(batch)).float().numpy().astype(np.float16))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 256, 64, 64), np.float16)
    elapsed = time.perf_counter() - start
    with atomic_path(out_npy) as tmp:
        np.save(tmp, embeddings)
    table = pd.DataFrame({
        "row": np.arange(len(images)),
        "image": [str(slice_dir / rel) for rel in images],
        "height": [h for h, _ in sizes],
        "width": [w for _, w in sizes],
    })
    with atomic_path(out_table) as tmp:
        table.to_parquet(tmp, index=False)
    log.info("%s: encoded %d slices in %.1f s (%.2f s/slice)", slice_dir.name, len(images), elapsed, elapsed / max(1, len(images)))
    return len(images)


@dataclass
class EmbeddingStore:
    """Read access to the cached embeddings of several cases.

    Attributes:
        rows: ``{image path: (case, row)}``.
        arrays: ``{case: N x 256 x 64 x 64 float16 array}`` (memory-mapped).
    """

    rows: dict[str, tuple[str, int]]
    arrays: dict[str, np.ndarray]

    @classmethod
    def open(cls, cache_dir: str | Path, cases: Iterable[str]) -> EmbeddingStore:
        cache_dir = Path(cache_dir)
        rows: dict[str, tuple[str, int]] = {}
        arrays: dict[str, np.ndarray] = {}
        for case in sorted(set(cases)):
            npy, table = cache_dir / f"{case}.npy", cache_dir / f"{case}.parquet"
            if not npy.is_file() or not table.is_file():
                raise DataError(f"{npy}: embedding cache entry missing (run the embed_images rule)")
            arrays[case] = np.load(npy, mmap_mode="r")
            for row, image in pd.read_parquet(table)[["row", "image"]].itertuples(index=False):
                rows[image] = (case, int(row))
        return cls(rows, arrays)

    def get(self, images: list[str]) -> torch.Tensor:
        """Embeddings of ``images`` as a B x 256 x 64 x 64 float32 tensor."""
        out = []
        for image in images:
            try:
                case, row = self.rows[image]
            except KeyError:
                raise DataError(f"{image}: no cached embedding for this slice") from None
            out.append(np.asarray(self.arrays[case][row], dtype=np.float32))
        return torch.from_numpy(np.stack(out))
