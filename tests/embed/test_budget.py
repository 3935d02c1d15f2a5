"""The embedding cache's size (segsam.embed.budget): bytes per slice, the plan-time line, the stop past cache.max_gb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segsam.embed.budget import cache_budget, embedding_bytes
from segsam.errors import ConfigError


def _images(path: Path, n: int) -> Path:
    pd.DataFrame({"image": [f"s{i}.png" for i in range(n)]}).to_parquet(path)
    return path


def test_bytes_per_slice_are_what_the_cache_stores() -> None:
    # embed/encode.py writes N x 256 x h x w float16: 64 x 64 for TinyViT, 16 x 16 for ViT-B at 256
    assert embedding_bytes("tiny_vit", 256) == np.zeros((256, 64, 64), np.float16).nbytes
    assert embedding_bytes("vit_b", 256) == np.zeros((256, 16, 16), np.float16).nbytes
    with pytest.raises(ValueError, match="unknown encoder"):
        embedding_bytes("vit_h", 256)


def test_the_size_of_sa_med2d_16m_is_terabytes(tmp_path: Path) -> None:
    budget = cache_budget(_images(tmp_path / "i.parquet", 10), ["tiny_vit", "vit_b"], 256, 1.0)
    per_slice = {name: gb / 10 for name, gb in budget.gb.items()}
    assert 3.7e6 * per_slice["tiny_vit"] == pytest.approx(7760, rel=0.01)  # GB for 3.7 M slices
    assert 3.7e6 * per_slice["vit_b"] == pytest.approx(485, rel=0.01)
    assert "10 slices" in budget.line and "cache.max_gb 1" in budget.line


def test_over_the_limit_stops_naming_the_index(tmp_path: Path) -> None:
    images = _images(tmp_path / "images.parquet", 1000)  # 2.1 GB of TinyViT embeddings
    with pytest.raises(ConfigError, match=r"images.parquet: embedding cache: 1000 slices .* cache.enabled: false"):
        cache_budget(images, ["tiny_vit"], 256, 2.0)
    assert cache_budget(images, ["tiny_vit"], 256, 3.0).slices == 1000
