"""Description and embedding caches: format, validation, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from segsam.errors import DataError
from segsam.text.cache import (
    DescriptionEntry,
    Provenance,
    add_description,
    add_embeddings,
    load_descriptions,
    load_embeddings,
    text_sha256,
)


def _entry(name: str, model: str = "m") -> DescriptionEntry:
    provenance = Provenance(model=model, template_hash="h", with_image=False, created_at="2026-01-01T00:00:00+00:00")
    return DescriptionEntry(class_name=name, texture="t", shape="s", position="p", provenance=provenance)


def _add_many(path: str, prefix: str) -> None:
    for i in range(10):
        add_description(path, _entry(f"{prefix}{i}"))


def test_round_trip_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    add_description(path, _entry("liver", "b"))
    add_description(path, _entry("liver", "a"))
    add_description(path, _entry("liver", "a"))  # same key: replaced
    cache = load_descriptions(path)
    assert len(cache.entries) == 2
    data = json.loads(path.read_text())
    assert [e["provenance"]["model"] for e in data["entries"]] == ["a", "b"]
    assert "provenance" in data and data["format_version"] == 1


def test_invalid_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    add_description(path, _entry("liver"))
    data = json.loads(path.read_text())
    data["entries"][0]["shape"] = ""
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"c.json: entry 0 is invalid"):
        load_descriptions(path)
    before = path.read_bytes()
    with pytest.raises(DataError):
        add_description(path, _entry("spleen"))
    assert path.read_bytes() == before


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.json")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(path, prefix)) for prefix in "abcd"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    names = {key.class_name for key in load_descriptions(path).entries}
    assert names == {f"{prefix}{i}" for prefix in "abcd" for i in range(10)}


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    assert load_embeddings(path) == {}
    key = (text_sha256("liver"), "st:x")
    add_embeddings(path, {key: np.arange(4, dtype=np.float64)})
    add_embeddings(path, {(text_sha256("spleen"), "st:x"): np.ones(4)})
    cached = load_embeddings(path)
    assert set(cached) == {key, (text_sha256("spleen"), "st:x")}
    assert cached[key].dtype == np.float32 and cached[key].tolist() == [0, 1, 2, 3]
