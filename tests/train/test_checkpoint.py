"""Resume state (segsam.train.checkpoint): round trip, and an unreadable state set aside instead of blocking."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from segsam.train.checkpoint import STATE_FILE, TrainState, load_state, save_state


class _NotAllowed:
    """A class ``torch.load(weights_only=True)`` rightly refuses to unpickle."""


def test_state_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rng.random(5)
    state = TrainState(fingerprint="abc", epoch=1, step_in_epoch=4, global_step=9, order=[2, 0, 1])
    state.rng_state = rng.bit_generator.state
    state.model = {"w": torch.arange(4.0)}
    save_state(tmp_path, state)
    loaded = load_state(tmp_path, "abc")
    assert loaded is not None and loaded.order == [2, 0, 1] and loaded.global_step == 9
    assert torch.equal(loaded.model["w"], state.model["w"])
    again = np.random.default_rng(0)
    again.bit_generator.state = loaded.rng_state
    assert again.random() == rng.random()  # the prompt stream continues where it stopped
    assert load_state(tmp_path, "other") is None  # other settings: ignored
    assert (tmp_path / STATE_FILE).is_file()  # ... but not removed


@pytest.mark.parametrize("kind", ["truncated", "garbage", "refused pickle", "not a dict"])
def test_an_unreadable_state_is_set_aside_and_training_starts_afresh(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / STATE_FILE
    if kind == "truncated":
        save_state(tmp_path, TrainState(fingerprint="abc", model={"w": torch.zeros(1000)}))
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01not a checkpoint" * 10)
    elif kind == "refused pickle":
        torch.save({"fingerprint": "abc", "extra": _NotAllowed()}, path)
    else:
        torch.save([1, 2, 3], path)
    with caplog.at_level(logging.WARNING, logger="segsam"):
        assert load_state(tmp_path, "abc") is None
    assert not path.exists()
    (aside,) = tmp_path.glob(f"{STATE_FILE}.unreadable-*")
    assert aside.stat().st_size > 0
    (record,) = [r for r in caplog.records if "unreadable resume state" in r.getMessage()]
    assert str(path) in record.getMessage() and "weights_only=False" not in record.getMessage()
    assert load_state(tmp_path, "abc") is None  # nothing left to trip over on the next run
