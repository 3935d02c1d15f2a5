"""The wrapper every rule script runs in (segsam.errors.run_stage): one line for user errors, a full log for bugs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from segsam.errors import DataError, run_stage


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    """run_stage reconfigures the ``segsam`` logger; put it back afterwards."""
    logger = logging.getLogger("segsam")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate, logger.level = propagate, level


def _user_error() -> None:
    raise DataError("input.nii.gz: not a volume; re-export it")


def _bug() -> None:
    raise KeyError("spacing")


def test_a_user_error_exits_1_with_one_line_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(SystemExit) as exit_info:
        run_stage(_user_error, log=str(log))
    assert exit_info.value.code == 1
    lines = log.read_text(encoding="utf-8").strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("DataError: input.nii.gz: not a volume; re-export it")


def test_an_unexpected_error_leaves_its_traceback_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    with pytest.raises(KeyError):
        run_stage(_bug, log=str(log))
    text = log.read_text(encoding="utf-8")
    assert "unexpected error in _bug" in text and "Traceback" in text and "KeyError: 'spacing'" in text
