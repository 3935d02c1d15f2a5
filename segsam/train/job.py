"""What one training job is: :class:`TrainJob`, the one description the launcher and every rank share.

The ``train`` rule builds a job (:meth:`TrainJob.create`, which computes its
resume fingerprint), :func:`segsam.train.ddp.launch` either trains it
in-process or writes it as JSON for the ``torchrun`` ranks, and each rank reads
it back (:meth:`TrainJob.from_json`) and trains it
(:func:`segsam.train.loop.train`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segsam.hashing import sha256_of, stable_hash

__all__ = ["TrainJob", "train_fingerprint", "result_settings"]

#: ``train`` keys that say how a job runs, not what it computes: the loader's worker processes and the
#: GPUs (prompts are seeded by each image's place in the epoch, so the processes do not change them).
RUN_ONLY = ("workers", "gpus")


def result_settings(train: Mapping[str, Any]) -> dict[str, Any]:
    """The ``train`` section without :data:`RUN_ONLY`: what the rule's params and the resume fingerprint hash."""
    return {k: v for k, v in train.items() if k not in RUN_ONLY}


_PATHS = ("masks_parquet", "cache_dir", "checkpoint", "summary", "state_dir", "text_parquet")


def train_fingerprint(
    config: Mapping[str, Any], code: str, masks_parquet: str | Path, text_parquet: str | Path | None
) -> str:
    """Identifies the settings, code and data that shape a training run (the resume state's key).

    Args:
        config: The whole validated config (its ``train`` section but :data:`RUN_ONLY`, its
            ``encoder`` and ``loss`` sections and ``cache.enabled`` count).
        code: The ``train`` rule's code hash.
        masks_parquet: The index's masks table (its content counts).
        text_parquet: The class text embeddings, or None.

    Returns:
        A stable hash (:func:`segsam.hashing.stable_hash`).
    """
    return stable_hash(
        {
            "train": result_settings(config["train"]),
            "encoder": config["encoder"],
            "loss": config["loss"],
            "cache": config["cache"]["enabled"],
            "code": code,
            "index": sha256_of(masks_parquet),
            "text": sha256_of(text_parquet) if text_parquet else None,
        }
    )


@dataclass(frozen=True)
class TrainJob:
    """One method's training job (every argument of a run, JSON-serialisable).

    Attributes:
        method: Method name (must train; see :mod:`segsam.methods`).
        masks_parquet: The index's masks table.
        cache_dir: Embedding cache folder of the method's frozen encoder;
            None for a method that reads the slices' images (its encoder
            trains, or a prompt-free network).
        checkpoint: Where the state dict of the trained sub-modules goes (atomic write).
        summary: Where the JSON summary goes (losses, timings, parameter
            counts, MLflow run id).
        config: The whole validated config.
        threads: torch intra-op threads (over all processes of the job).
        state_dir: Folder of the resume state (written every
            ``train.checkpoint_every`` steps and at each epoch's end; removed
            when training finishes). None: no resume.
        fingerprint: Identifies the settings and code of this training
            (:func:`train_fingerprint`); a saved state with another
            fingerprint is ignored.
        text_parquet: Class text embeddings (``embed_text``), for methods with T2VSE.

    Raises:
        ValueError: An empty method name or fewer than one thread.
    """

    method: str
    masks_parquet: Path
    cache_dir: Path | None
    checkpoint: Path
    summary: Path
    config: Mapping[str, Any] = field(repr=False)
    threads: int = 1
    state_dir: Path | None = None
    fingerprint: str = ""
    text_parquet: Path | None = None

    def __post_init__(self) -> None:
        if not self.method:
            raise ValueError("a training job needs a method name")
        if int(self.threads) < 1:
            raise ValueError(f"a training job needs at least one thread, got {self.threads}")
        for name in _PATHS:
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None or value == "" else Path(value))
        object.__setattr__(self, "threads", int(self.threads))
        object.__setattr__(self, "config", dict(self.config))

    @classmethod
    def create(
        cls,
        method: str,
        masks_parquet: str | Path,
        cache_dir: str | Path | None,
        checkpoint: str | Path,
        summary: str | Path,
        *,
        config: Mapping[str, Any],
        threads: int = 1,
        state_dir: str | Path | None = None,
        code: str = "",
        text_parquet: str | Path | None = None,
    ) -> TrainJob:
        """The job with its fingerprint computed from the config, ``code`` (the rule's code hash) and the inputs.

        Only an identical job (settings, training code, index and text
        content) resumes from a saved state.
        """
        return cls(
            method=method,
            masks_parquet=masks_parquet,
            cache_dir=cache_dir,
            checkpoint=checkpoint,
            summary=summary,
            config=config,
            threads=threads,
            state_dir=state_dir,
            fingerprint=train_fingerprint(config, code, masks_parquet, text_parquet),
            text_parquet=text_parquet,
        )

    def to_json(self) -> str:
        """The job as a JSON object (paths as strings)."""
        payload = asdict(self)
        for name in _PATHS:
            payload[name] = None if payload[name] is None else str(payload[name])
        return json.dumps(payload)

    @classmethod
    def from_json(cls, text: str) -> TrainJob:
        """The job :meth:`to_json` wrote."""
        return cls(**json.loads(text))
