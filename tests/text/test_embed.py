"""Class-text embeddings: offline MiniLM, the openai backend via the fake server, the cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import segsam.text.embed as embed_module
from segsam.errors import ConfigError
from segsam.text.cache import load_embeddings
from segsam.text.describe import EndpointError, describe_vocabulary
from segsam.text.embed import EmbeddingConfig, compose_text, embed_descriptions, read_descriptions

ROOT = Path(__file__).resolve().parents[2]
MINILM = {"backend": "sentence_transformers", "model": "all-MiniLM-L6-v2", "base_url": None, "batch_size": 32}
DISABLED_LLM = {"enabled": False}


@pytest.fixture(scope="module")
def descriptions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """descriptions.json of the 30 default classes, from the committed cache."""
    folder = tmp_path_factory.mktemp("describe")
    cache = folder / "cache.json"
    cache.write_bytes((ROOT / "config/descriptions/vocabulary_descriptions.json").read_bytes())
    out = folder / "descriptions.json"
    describe_vocabulary(ROOT / "config/vocabulary.csv", cache, out, DISABLED_LLM, generated_file=folder / "gen.json")
    return out


class CountingBackend:
    """Wraps a backend and records every text it is asked to embed."""

    def __init__(self, inner: Any, seen: list[str]) -> None:
        self.inner = inner
        self.seen = seen

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Texts sent to any embedding backend during the test."""
    texts: list[str] = []
    real = embed_module.make_backend
    monkeypatch.setattr(
        embed_module, "make_backend", lambda cfg, llm, sleep: CountingBackend(real(cfg, llm, sleep), texts)
    )
    return texts


def test_compose_text() -> None:
    text = compose_text("kidney_right", {"texture": "A.", "shape": " B. ", "position": "C."})
    assert text == "kidney right. Texture: A. Shape: B. Position: C."


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="backend"):
        EmbeddingConfig.from_mapping({"backend": "word2vec"})
    with pytest.raises(ConfigError, match="unknown key"):
        EmbeddingConfig.from_mapping({"api_key": "x"})
    with pytest.raises(ConfigError, match="neither all-MiniLM-L6-v2 nor a local folder"):
        embed_module.SentenceTransformerBackend("bert-base-uncased", 8)


def test_minilm_offline_deterministic_and_cached(descriptions: Path, tmp_path: Path, seen: list[str]) -> None:
    out, cache = tmp_path / "emb.parquet", tmp_path / "cache.parquet"
    embed_descriptions(descriptions, out, cache, MINILM)
    table = pq.read_table(out).to_pandas()
    assert table.columns.tolist() == ["class_id", "name", "model", "dim", "vector"]
    assert table["class_id"].tolist() == list(range(1, 31))
    assert table["name"].iloc[0] == "liver" and set(table["dim"]) == {384}
    assert set(table["model"]) == {"sentence_transformers:all-MiniLM-L6-v2"}
    vectors = np.stack(table["vector"].to_numpy())
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(seen) == 30 and len(load_embeddings(cache)) == 30

    # fully cached: no model call, identical output
    embed_descriptions(descriptions, tmp_path / "again.parquet", cache, MINILM)
    assert len(seen) == 30
    assert pq.read_table(tmp_path / "again.parquet").equals(pq.read_table(out))

    # a freshly loaded model gives the same vectors (deterministic)
    embed_module._load_sentence_transformer.cache_clear()
    texts = [text for _, _, text in read_descriptions(descriptions)][:3]
    fresh = embed_module.SentenceTransformerBackend("all-MiniLM-L6-v2", 8).encode(texts)
    assert np.allclose(fresh, vectors[:3], atol=1e-6)

    # one changed description: only that text is embedded
    data = json.loads(descriptions.read_text())
    data["spleen"]["shape"] = "Crescent-shaped organ."
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    before = len(seen)
    embed_descriptions(changed, tmp_path / "changed.parquet", cache, MINILM)
    assert seen[before:] == [compose_text("spleen", data["spleen"])]
    assert len(load_embeddings(cache)) == 31


def test_openai_backend_through_fake_server(fake_openai, descriptions: Path, tmp_path: Path, seen: list[str]) -> None:
    cfg = {
        "backend": "openai",
        "model": "fake-embed",
        "base_url": fake_openai.base_url,
        "batch_size": 8,
    }
    llm = {"api_key_env": "SEGSAM_TEST_EMBED_KEY", "max_retries": 2}  # the openai backend's client settings
    fake_openai.push_embed(status=503)
    out, cache = tmp_path / "emb.parquet", tmp_path / "cache.parquet"
    sleeps: list[float] = []
    embed_descriptions(descriptions, out, cache, cfg, llm, sleep=sleeps.append)
    table = pq.read_table(out).to_pandas()
    assert len(table) == 30 and set(table["dim"]) == {8}
    assert set(table["model"]) == {"openai:fake-embed"}
    calls = fake_openai.calls("/embeddings")
    assert len(calls) == 1 + 4 and len(sleeps) == 1  # 30 texts in batches of 8, first one retried
    assert all(call.body["model"] == "fake-embed" and len(call.body["input"]) <= 8 for call in calls)
    texts = [text for _, _, text in read_descriptions(descriptions)]
    expected = np.asarray([fake_openai.vector(text) for text in texts])
    assert np.allclose(np.stack(table["vector"].to_numpy()), expected, atol=1e-6)
    embed_descriptions(descriptions, tmp_path / "again.parquet", cache, cfg, llm)
    assert len(fake_openai.calls("/embeddings")) == 5


def test_openai_backend_gives_up(fake_openai, descriptions: Path, tmp_path: Path) -> None:
    cfg = {"backend": "openai", "model": "fake-embed", "base_url": fake_openai.base_url}
    llm = {"max_retries": 1}
    fake_openai.push_embed(5, status=500)
    with pytest.raises(EndpointError, match=r"embeddings of texts 1-30.*2 attempt.*HTTP 500"):
        embed_descriptions(descriptions, tmp_path / "e.parquet", tmp_path / "c.parquet", cfg, llm, sleep=lambda s: None)
    assert not (tmp_path / "e.parquet").exists() and not (tmp_path / "c.parquet").exists()
