"""Digests the stages share: a file's sha256 and a stable hash of JSON-like objects.

File digests identify data and weights (downloads, checkpoints, the index a
training resumes from); :func:`stable_hash` names settings (config hashes,
resume fingerprints) independently of key order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: Bytes read per chunk when hashing a file (memory stays bounded for multi-GB archives).
CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    """The hex sha256 digest of a file, read in chunks.

    Args:
        path: File to hash.

    Returns:
        64 lowercase hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash a JSON-serialisable object independently of key order.

    Args:
        obj: Mappings, sequences and scalars (anything else is hashed as ``str``).
        length: Hex characters kept.
    """
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]
