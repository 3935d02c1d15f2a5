"""The image-embedding cache: one encoder pass per slice, rows addressable by image path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.config import encoder_settings, load_config
from segsam.data.slicing import MANIFEST
from segsam.embed.encode import encode_case
from segsam.embed.store import EmbeddingStore
from segsam.errors import ConfigError, DataError


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
    n = encode_case(
        folder,
        tmp_path / "cache/case_a.npy",
        tmp_path / "cache/case_a.parquet",
        encoder_cfg=encoder_settings(load_config(), "tiny_vit"),
    )
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


def test_an_embed_job_past_cache_max_gb_stops_before_it_encodes(tmp_path: Path) -> None:
    """A first run has no index when it plans: each job checks its cache folder (segsam.embed.budget.check_room)."""
    folder = _slice_dir(tmp_path)  # 2 slices: 4.2 MB of TinyViT embeddings
    cache = tmp_path / "cache"
    cache.mkdir()
    np.save(cache / "case_0.npy", np.zeros((1, 256, 64, 64), np.float16))  # another case already cached: 2.1 MB
    outputs = (cache / "case_a.npy", cache / "case_a.parquet")
    settings = encoder_settings(load_config(), "tiny_vit")
    with pytest.raises(
        ConfigError,
        match=r"^\S*cache: embedding cache would reach 0\.01 GB with case_a \(2 slices\), over "
        r"cache.max_gb 0.006; .* cache.enabled: false",
    ):
        encode_case(folder, *outputs, encoder_cfg=settings, max_gb=0.006)
    assert not any(p.exists() for p in outputs)
    assert encode_case(folder, *outputs, encoder_cfg=settings, max_gb=0.007) == 2  # 6.3 MB: within
    assert encode_case(folder, *outputs, encoder_cfg=settings, max_gb=0.007) == 2  # a rerun counts its own file once


def test_vit_b_cache_holds_the_encoder_of_the_vit_b_methods(tmp_path: Path, random_vit_b: tuple[Path, str]) -> None:
    """A ViT-B cache entry (16 x 16) is what ft_sam's model would compute from the same image."""
    import torch

    from segsam.data.io import read_png
    from segsam.models.build import build_model
    from segsam.models.preprocess import encoder_input
    from segsam.models.weights import WeightsError

    folder = _slice_dir(tmp_path)
    config = load_config()
    config["encoder"]["vit_b"].update(weights=str(random_vit_b[0]), sha256=random_vit_b[1])
    settings = encoder_settings(config, "vit_b")
    encode_case(folder, tmp_path / "cache/case_a.npy", tmp_path / "cache/case_a.parquet", encoder_cfg=settings)
    array = np.load(tmp_path / "cache/case_a.npy")
    assert array.shape == (2, 256, 16, 16)
    table = pd.read_parquet(tmp_path / "cache/case_a.parquet")
    model = build_model("ft_sam", encoder_weights=random_vit_b[0], num_classes=4, text_dim=None)
    with torch.inference_mode():
        expected = model.encode(encoder_input(read_png(table["image"][0]), 256, "vit_b")[0][None])[0]
    torch.testing.assert_close(
        torch.from_numpy(array[0].astype(np.float32)), expected, atol=2e-2, rtol=2e-2
    )  # float16 cache
    settings["sha256"] = "0" * 64
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        encode_case(folder, tmp_path / "x.npy", tmp_path / "x.parquet", encoder_cfg=settings)
    assert not (tmp_path / "x.npy").exists()


def test_missing_cache_entry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="embed_images"):
        EmbeddingStore.open(tmp_path, ["case_b"])


def _cache(root: Path, rows: int = 3) -> tuple[Path, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(1).standard_normal((rows, 256, 8, 8)).astype(np.float16)
    np.save(root / "case_c.npy", array)
    pd.DataFrame({"row": range(rows), "image": [f"i{k}.png" for k in range(rows)]}).to_parquet(root / "case_c.parquet")
    return root / "case_c.npy", array


def test_rows_are_read_from_the_file(tmp_path: Path) -> None:
    _, array = _cache(tmp_path)
    store = EmbeddingStore.open(tmp_path, ["case_c"])
    np.testing.assert_array_equal(store.get(["i2.png", "i0.png"]).numpy(), array[[2, 0]].astype(np.float32))


def test_truncated_or_corrupt_cache_is_a_clear_error(tmp_path: Path) -> None:
    npy, _ = _cache(tmp_path)
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) - 100])  # last row cut short
    store = EmbeddingStore.open(tmp_path, ["case_c"])
    store.get(["i0.png"])
    with pytest.raises(DataError, match="case_c.npy: truncated at row 2"):
        store.get(["i2.png"])
    npy.write_bytes(b"not an npy file")
    with pytest.raises(DataError, match="case_c.npy: not a readable .npy"):
        EmbeddingStore.open(tmp_path, ["case_c"])
    _cache(tmp_path, rows=3)
    pd.DataFrame({"row": [5], "image": ["i5.png"]}).to_parquet(tmp_path / "case_c.parquet")
    with pytest.raises(DataError, match="row 5 of i5.png is outside"):
        EmbeddingStore.open(tmp_path, ["case_c"])
