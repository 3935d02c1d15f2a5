"""Rule embed_images: encode one sliced case with a frozen image encoder (format in :mod:`segsam.embed`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path
from segsam.data.io import read_png
from segsam.data.slicing import MANIFEST
from segsam.embed.budget import check_room
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
    max_gb: float = float("inf"),
    threads: int = 1,
) -> int:
    """Encode every image of one sliced case with a frozen image encoder.

    Args:
        slice_dir: Output folder of the slice stage for the case.
        out_npy: N x 256 x h x w float16 embeddings.
        out_table: Parquet with columns ``row``, ``image`` (path as in the
            index), ``height``, ``width``.
        encoder_cfg: :func:`segsam.config.encoder_settings` of the encoder.
        max_gb: ``cache.max_gb``: nothing is encoded when the cache folder would pass it.
        threads: torch intra-op threads (the rule's ``threads``).

    Returns:
        The number of slices encoded.

    Raises:
        ConfigError: The case would take the cache past ``max_gb`` (:func:`segsam.embed.budget.check_room`).
    """
    torch.set_num_threads(max(1, threads))
    slice_dir = Path(slice_dir)
    manifest = pd.read_parquet(slice_dir / MANIFEST)
    images = sorted(manifest["image"].unique())
    name = str(encoder_cfg["name"])
    check_room(out_npy, len(images), name, int(encoder_cfg["image_size"]), max_gb)
    checkpoint = resolve_weights(encoder_cfg["weights"], encoder_cfg["sha256"])
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
