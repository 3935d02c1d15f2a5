"""Resumable training state: written atomically every N steps, loaded with ``weights_only=True``.

The state holds everything needed to continue as if never interrupted: the
trained parameters, optimiser and scheduler state, the numpy prompt-sampling
generator and torch's RNG, the epoch's image order and the position in it, the
history so far, and the MLflow run id (the resumed job keeps logging into the
same run). A ``fingerprint`` of the settings and code that shape training is
stored with it; a state whose fingerprint differs is ignored, so a changed
config never resumes from stale weights. A state that cannot be read (a
damaged file, or a pickle that ``weights_only=True`` refuses) is moved aside
with a warning and training starts afresh: it never blocks the method.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segsam.atomic import atomic_path

log = logging.getLogger(__name__)

STATE_FILE = "resume.pt"


@dataclass
class TrainState:
    """Where training stands (see the module docstring)."""

    fingerprint: str
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    order: list[int] = field(default_factory=list)
    rng_state: dict[str, Any] = field(default_factory=dict)
    torch_rng: torch.Tensor | None = None
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimiser: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    seconds: float = 0.0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0


def save_state(state_dir: str | Path, state: TrainState) -> Path:
    """Atomically write the state to ``<state_dir>/resume.pt``."""
    path = Path(state_dir) / STATE_FILE
    payload = {
        **{k: v for k, v in state.__dict__.items() if k not in ("order", "rng_state")},
        "order": torch.as_tensor(np.asarray(state.order, dtype=np.int64)),
        "rng_state": _encode_rng(state.rng_state),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_state(state_dir: str | Path, fingerprint: str) -> TrainState | None:
    """The saved state if it exists and matches ``fingerprint``, else ``None``."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict):
            raise TypeError(f"a {type(payload).__name__}, not a state dict")
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        aside = _set_aside(path)
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        log.warning("%s: unreadable resume state (%s); moved to %s, training starts afresh", path, reason, aside)
        return None
    if payload.get("fingerprint") != fingerprint:
        log.warning("%s: saved state is for other settings or code; starting afresh", path)
        return None
    payload["order"] = payload["order"].tolist()
    payload["rng_state"] = _decode_rng(payload["rng_state"])
    state = TrainState(**payload)
    log.info("resuming from %s at epoch %d, step %d", path, state.epoch + 1, state.step_in_epoch)
    return state


def _set_aside(path: Path) -> Path:
    """Rename an unreadable state file out of the way (kept for inspection, never loaded again)."""
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    return aside


def clear_state(state_dir: str | Path) -> None:
    """Remove the resume state once training has finished."""
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def _encode_rng(state: dict[str, Any]) -> dict[str, Any]:
    # PCG64's 128-bit integers as decimal strings: plain types only, for weights_only loading
    inner = state.get("state", {})
    return {
        "bit_generator": state.get("bit_generator", ""),
        "state": {k: str(v) for k, v in inner.items()},
        "has_uint32": int(state.get("has_uint32", 0)),
        "uinteger": int(state.get("uinteger", 0)),
    }


def _decode_rng(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "state": {k: int(v) for k, v in state["state"].items()}}
