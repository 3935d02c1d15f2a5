"""The image-embedding cache: one encoder pass per slice, rows addressable by image path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.config import load_config
from segsam.data.slicing import MANIFEST
from segsam.errors import DataError
from segsam.train.embedding_cache import EmbeddingStore, encode_case


def _slice_dir(root: Path) -> Path:
    folder = root / "case_a"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k, shape in enumerate([(40, 60), (50, 50)]):
        name = f"images/ct--demo--case_a--z_{k:04d}.png"
        sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 255, shape, dtype=np.uint8)), str(folder / name))
        rows.append({"image": name, "mask": f"masks/x{k}.png"})
    pd.DataFrame(rows).to_parquet(folder / MANIFEST)
    return folder


def test_encode_case_and_store(tmp_path: Path) -> None:
    folder = _slice_dir(tmp_path)
    n = encode_case(folder, tmp_path / "cache/case_a.npy", tmp_path / "cache/case_a.parquet", encoder_cfg=load_config()["encoder"])
    assert n == 2
    array = np.load(tmp_path / "cache/case_a.npy")
    assert array.shape == (2, 256, 64, 64) and array.dtype == np.float16
    table = pd.read_parquet(tmp_path / "cache/case_a.parquet")
    assert table[["height", "width"]].values.tolist() == [[40, 60], [50, 50]]
    store = EmbeddingStore.open(tmp_path / "cache", ["case_a"])
    got = store.get([table["image"][1], table["image"][0]])
    assert got.shape == (2, 256, 64, 64)
    np.testing.assert_array_equal(got[0].numpy(), array[1].astype(np.float32))
    with pytest.raises(DataError, match="no cached embedding"):
        store.get(["nope.png"])


def test_missing_cache_entry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="embed_images"):
        EmbeddingStore.open(tmp_path, ["case_b"])
