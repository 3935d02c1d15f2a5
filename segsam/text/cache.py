"""On-disk caches of the class-knowledge stage: descriptions (JSON) and embeddings (parquet).

Both caches are shared by concurrent jobs, so every read-modify-write runs under
an exclusive ``fcntl.flock`` on a sibling ``<file>.lock`` and the new content is
written atomically (temporary sibling + rename): a reader never sees a partial
file and two writers never lose each other's entries.

Description cache (``config/descriptions/vocabulary_descriptions.json``)::

    {
      "format_version": 1,
      "provenance": {...},          # who wrote the file as a whole
      "entries": [                  # sorted by class, model, template hash, image flag
        {"class_name": "liver", "texture": "...", "shape": "...", "position": "...",
         "provenance": {"model": "...", "template_hash": "...", "with_image": false,
                        "created_at": "...", "base_url_host": "...", "note": "..."}}
      ]
    }

An entry is identified by :class:`DescriptionKey` = (class name, prompt template
hash, model, with_image). Entries written by hand use the model name
:data:`HUMAN_CURATED` and the same template hash scheme, so hand-written and
LLM-written entries share one format. The file never holds credentials: the
endpoint is recorded by host name only.

Embedding cache (``results/cache/text_embeddings.parquet``): one row per
(text sha256, model) with columns ``text_hash`` (string), ``model`` (string),
``dim`` (int32) and ``vector`` (list<float32>).

Class embeddings (``results/text/class_embeddings.parquet``, rule ``embed_text``):
one row per vocabulary class, :data:`CLASS_EMBEDDINGS_SCHEMA`; training and
evaluation read it with :func:`load_class_embeddings`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segsam.atomic import atomic_path, write_json
from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError

logger = logging.getLogger(__name__)

#: The three description fields, in the order they are composed and shown.
FIELDS: tuple[str, str, str] = ("texture", "shape", "position")
#: Model name recorded for descriptions written and reviewed by people.
HUMAN_CURATED = "human-curated"
#: Longest accepted description field, in characters (one or two sentences).
MAX_FIELD_CHARS = 600
#: Version of the description cache layout.
FORMAT_VERSION = 1

_PROVENANCE_REQUIRED = {"model", "template_hash", "with_image", "created_at", "base_url_host"}
_PROVENANCE_OPTIONAL = {"note"}
_ENTRY_KEYS = {"class_name", "provenance", *FIELDS}

EMBEDDING_SCHEMA = pa.schema(
    [
        ("text_hash", pa.string()),
        ("model", pa.string()),
        ("dim", pa.int32()),
        ("vector", pa.list_(pa.float32())),
    ]
)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock for ``path`` (on the sibling ``<name>.lock``).

    The lock file is left in place after release: removing it would let two
    processes lock two different inodes.

    Args:
        path: The file whose read-modify-write is being protected.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def text_sha256(text: str) -> str:
    """Return the hex sha256 of ``text`` encoded as UTF-8 (the embedding cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_fields(obj: object) -> dict[str, str]:
    """Validate a description body: exactly ``texture``, ``shape``, ``position``, non-empty strings.

    Args:
        obj: A decoded JSON value (an LLM reply or a cache entry without its
            ``class_name`` and ``provenance``).

    Returns:
        The three fields, whitespace-stripped, in :data:`FIELDS` order.

    Raises:
        ValueError: With a short description of what is wrong.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a JSON object with keys {', '.join(FIELDS)}, got {type(obj).__name__}")
    missing = [name for name in FIELDS if name not in obj]
    extra = sorted(str(key) for key in obj if key not in FIELDS)
    if missing or extra:
        raise ValueError(f"fields must be exactly {', '.join(FIELDS)} (missing: {missing}, extra: {extra})")
    fields: dict[str, str] = {}
    for name in FIELDS:
        value = obj[name]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field '{name}' must be a non-empty string")
        if len(value.strip()) > MAX_FIELD_CHARS:
            raise ValueError(f"field '{name}' is longer than {MAX_FIELD_CHARS} characters")
        fields[name] = " ".join(value.split())
    return fields


class DescriptionKey(NamedTuple):
    """Identity of one cached description."""

    class_name: str
    template_hash: str
    model: str
    with_image: bool


@dataclass(frozen=True)
class Provenance:
    """Where a description came from (never any credential).

    Attributes:
        model: The LLM that wrote it, or :data:`HUMAN_CURATED`.
        template_hash: Hash of the prompt template it answers.
        with_image: Whether an example slice was shown with the prompt.
        created_at: ISO-8601 UTC time stamp.
        base_url_host: Host name of the endpoint (``None`` for hand-written entries).
        note: Free text, e.g. who reviewed a hand-written entry.
    """

    model: str
    template_hash: str
    with_image: bool
    created_at: str
    base_url_host: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        for name in ("model", "template_hash", "created_at"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"provenance '{name}' must be a non-empty string")
        if not isinstance(self.with_image, bool):
            raise ValueError("provenance 'with_image' must be a boolean")
        if self.base_url_host is not None and not isinstance(self.base_url_host, str):
            raise ValueError("provenance 'base_url_host' must be a string or null")
        if self.note is not None and not isinstance(self.note, str):
            raise ValueError("provenance 'note' must be a string or null")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (``note`` only when set)."""
        out: dict[str, Any] = {
            "model": self.model,
            "template_hash": self.template_hash,
            "with_image": self.with_image,
            "created_at": self.created_at,
            "base_url_host": self.base_url_host,
        }
        if self.note is not None:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, obj: object) -> Provenance:
        """Parse the JSON form.

        Args:
            obj: A decoded JSON object.

        Returns:
            The provenance.

        Raises:
            ValueError: When keys are missing, unknown or of the wrong type.
        """
        if not isinstance(obj, Mapping):
            raise ValueError("provenance must be a JSON object")
        missing = sorted(_PROVENANCE_REQUIRED - set(obj))
        extra = sorted(set(obj) - _PROVENANCE_REQUIRED - _PROVENANCE_OPTIONAL)
        if missing or extra:
            raise ValueError(f"provenance keys: missing {missing}, unknown {extra}")
        return cls(**{key: obj[key] for key in obj})


@dataclass(frozen=True)
class DescriptionEntry:
    """One class description: the three fields plus provenance.

    Attributes:
        class_name: Vocabulary name of the class.
        texture: Appearance / intensity / internal texture in CT and MR.
        shape: Outline and form.
        position: Location relative to neighbouring anatomy.
        provenance: Who or what wrote it.
    """

    class_name: str
    texture: str
    shape: str
    position: str
    provenance: Provenance

    def __post_init__(self) -> None:
        if not isinstance(self.class_name, str) or not self.class_name:
            raise ValueError("class_name must be a non-empty string")
        parse_fields(self.fields())

    @property
    def key(self) -> DescriptionKey:
        """The cache key of this entry."""
        return DescriptionKey(
            self.class_name, self.provenance.template_hash, self.provenance.model, self.provenance.with_image
        )

    def fields(self) -> dict[str, str]:
        """Return ``{"texture": ..., "shape": ..., "position": ...}``."""
        return {"texture": self.texture, "shape": self.shape, "position": self.position}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form stored in the cache file."""
        return {"class_name": self.class_name, **self.fields(), "provenance": self.provenance.to_dict()}

    @classmethod
    def from_dict(cls, obj: object) -> DescriptionEntry:
        """Parse the JSON form stored in the cache file.

        Args:
            obj: A decoded JSON object.

        Returns:
            The entry.

        Raises:
            ValueError: When the object does not follow the entry format.
        """
        if not isinstance(obj, Mapping):
            raise ValueError("entry must be a JSON object")
        if set(obj) != _ENTRY_KEYS:
            raise ValueError(f"entry keys must be {sorted(_ENTRY_KEYS)}, got {sorted(obj)}")
        fields = parse_fields({name: obj[name] for name in FIELDS})
        return cls(class_name=obj["class_name"], provenance=Provenance.from_dict(obj["provenance"]), **fields)


@dataclass(frozen=True)
class DescriptionCache:
    """Contents of a description cache file.

    Attributes:
        provenance: The file-level provenance block.
        entries: The entries by key.
    """

    provenance: dict[str, Any]
    entries: dict[DescriptionKey, DescriptionEntry]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, entries sorted by key."""
        ordered = [self.entries[key] for key in sorted(self.entries)]
        return {
            "format_version": FORMAT_VERSION,
            "provenance": self.provenance,
            "entries": [entry.to_dict() for entry in ordered],
        }


#: File-level provenance of a cache file created by code (not the committed one).
DEFAULT_FILE_PROVENANCE: dict[str, Any] = {
    "note": "created by segsam.text; every entry records its own provenance",
}


def load_descriptions(path: str | os.PathLike[str]) -> DescriptionCache:
    """Read a description cache; a file that does not exist is an empty cache.

    Args:
        path: The cache file.

    Returns:
        The cache contents.

    Raises:
        DataError: When the file is not valid JSON or does not follow the format.
    """
    source = Path(path)
    if not source.exists():
        return DescriptionCache(provenance=dict(DEFAULT_FILE_PROVENANCE), entries={})
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{source}: not a readable JSON description cache ({err})") from err
    if not isinstance(data, dict) or set(data) != {"format_version", "provenance", "entries"}:
        raise DataError(f"{source}: a description cache needs exactly the keys format_version, provenance, entries")
    if data["format_version"] != FORMAT_VERSION:
        raise DataError(f"{source}: format_version {data['format_version']!r} is not {FORMAT_VERSION}")
    if not isinstance(data["provenance"], dict) or not isinstance(data["entries"], list):
        raise DataError(f"{source}: 'provenance' must be an object and 'entries' a list")
    entries: dict[DescriptionKey, DescriptionEntry] = {}
    for position, raw in enumerate(data["entries"]):
        try:
            entry = DescriptionEntry.from_dict(raw)
        except ValueError as err:
            raise DataError(f"{source}: entry {position} is invalid: {err}") from err
        if entry.key in entries:
            raise DataError(f"{source}: entry {position} duplicates the key {tuple(entry.key)}")
        entries[entry.key] = entry
    return DescriptionCache(provenance=data["provenance"], entries=entries)


def add_description(path: str | os.PathLike[str], entry: DescriptionEntry) -> None:
    """Insert (or replace) one entry in the cache file, atomically and under the file lock.

    Args:
        path: The cache file (created when missing).
        entry: The new entry.

    Raises:
        DataError: When the existing file is invalid (it is then left untouched).
    """
    with file_lock(path):
        cache = load_descriptions(path)
        cache.entries[entry.key] = entry
        write_json(path, cache.to_dict())
    logger.debug("cached description of %s (%s)", entry.class_name, entry.provenance.model)


def load_embeddings(path: str | os.PathLike[str]) -> dict[tuple[str, str], np.ndarray]:
    """Read the embedding cache; a file that does not exist is an empty cache.

    Args:
        path: The parquet cache file.

    Returns:
        ``{(text_hash, model): float32 vector}``.

    Raises:
        DataError: When the file cannot be read or has the wrong columns.
    """
    source = Path(path)
    if not source.exists():
        return {}
    try:
        table = pq.read_table(source)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{source}: not a readable parquet embedding cache ({err})") from err
    if table.schema.names != EMBEDDING_SCHEMA.names:
        raise DataError(f"{source}: embedding cache columns {table.schema.names} are not {EMBEDDING_SCHEMA.names}")
    out: dict[tuple[str, str], np.ndarray] = {}
    for row in table.to_pylist():
        vector = np.asarray(row["vector"], dtype=np.float32)
        if vector.shape != (row["dim"],):
            raise DataError(f"{source}: vector of {row['text_hash']} has length {vector.size}, dim says {row['dim']}")
        out[(row["text_hash"], row["model"])] = vector
    return out


def add_embeddings(path: str | os.PathLike[str], vectors: Mapping[tuple[str, str], np.ndarray]) -> None:
    """Merge new vectors into the parquet cache, atomically and under the file lock.

    Args:
        path: The parquet cache file (created when missing).
        vectors: ``{(text_hash, model): 1-D vector}``.

    Raises:
        DataError: When the existing file is invalid (it is then left untouched).
    """
    with file_lock(path):
        merged = load_embeddings(path)
        merged.update({key: np.asarray(value, dtype=np.float32).reshape(-1) for key, value in vectors.items()})
        keys = sorted(merged, key=lambda key: (key[1], key[0]))
        table = pa.table(
            {
                "text_hash": [key[0] for key in keys],
                "model": [key[1] for key in keys],
                "dim": [int(merged[key].size) for key in keys],
                "vector": [merged[key].tolist() for key in keys],
            },
            schema=EMBEDDING_SCHEMA,
        )
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    logger.debug("cached %d new embedding(s) in %s", len(vectors), path)


#: Columns of ``class_embeddings.parquet`` (one row per vocabulary class).
CLASS_EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("class_id", pa.int32()),
        ("name", pa.string()),
        ("model", pa.string()),
        ("dim", pa.int32()),
        ("vector", pa.list_(pa.float32())),
    ]
)


def load_class_embeddings(path: str | os.PathLike[str], vocabulary: Vocabulary) -> np.ndarray:
    """The class text embeddings as a C x d float32 array, in vocabulary order.

    Args:
        path: ``class_embeddings.parquet`` (rule ``embed_text``).
        vocabulary: The global vocabulary (row k = class ``vocabulary.ids[k]``).

    Raises:
        DataError: When a vocabulary class has no embedding.
    """
    table = pq.read_table(path).to_pandas().set_index("class_id")
    missing = [c for c in vocabulary.ids if c not in table.index]
    if missing:
        raise DataError(f"{path}: no text embedding for class ids {missing}; rerun the embed_text rule")
    return np.stack([np.asarray(table.loc[c, "vector"], dtype=np.float32) for c in vocabulary.ids])


def accept_descriptions(
    generated: str | os.PathLike[str], reviewed: str | os.PathLike[str], classes: list[str] | None = None
) -> list[DescriptionKey]:
    """Move LLM-written entries a person has read into the reviewed description file.

    The workflow never writes the reviewed (committed) file itself; this is the
    explicit step that does, entry by entry, keeping each entry's provenance.

    Args:
        generated: The generated cache (``results/cache/llm_descriptions.json``).
        reviewed: The reviewed file (``text.descriptions_file``).
        classes: Class names to accept; None accepts every generated entry.

    Returns:
        The keys added to (or replaced in) the reviewed file.

    Raises:
        DataError: A named class has no generated entry, or a file is invalid.
    """
    source = load_descriptions(generated)
    wanted = set(classes) if classes is not None else {key.class_name for key in source.entries}
    missing = sorted(wanted - {key.class_name for key in source.entries})
    if missing:
        raise DataError(f"{generated}: no generated description for class(es) {', '.join(missing)}")
    picked = [entry for key, entry in sorted(source.entries.items()) if key.class_name in wanted]
    with file_lock(reviewed):
        target = load_descriptions(reviewed)
        for entry in picked:
            target.entries[entry.key] = entry
        write_json(reviewed, target.to_dict())
    return [entry.key for entry in picked]
