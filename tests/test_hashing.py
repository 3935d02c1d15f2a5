"""File digests and stable hashes (segsam.hashing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from segsam import hashing
from segsam.hashing import sha256_of, stable_hash


def test_sha256_of_matches_hashlib_across_chunks(tmp_path: Path, monkeypatch) -> None:
    payload = bytes(np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8))
    path = tmp_path / "x"
    path.write_bytes(payload)
    monkeypatch.setattr(hashing, "CHUNK", 4096)  # many chunks, the last one partial
    assert sha256_of(path) == hashlib.sha256(payload).hexdigest()


def test_stable_hash_is_key_order_independent() -> None:
    one = {"a": 1, "b": {"x": [1, 2], "y": "z"}}
    two = {"b": {"y": "z", "x": [1, 2]}, "a": 1}
    assert stable_hash(one) == stable_hash(two)
    assert len(stable_hash(one)) == 12
    assert len(stable_hash(one, length=20)) == 20
    assert stable_hash(one) != stable_hash({"a": 2, "b": {"x": [1, 2], "y": "z"}})
