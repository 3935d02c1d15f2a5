"""The wrapper every rule script runs in (segsam.errors.run_stage): one line for user errors, a full log for bugs."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from segsam.errors import DataError, run_stage

REPO = Path(__file__).resolve().parents[1]


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


def _script_job(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``body`` as a Snakemake script job would: ``snakemake`` (with its log) defined in ``__main__``."""
    log = tmp_path / "logs" / "job.log"
    preamble = f"import types\nsnakemake = types.SimpleNamespace(log=[{str(log)!r}])\n"
    proc = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(body)], capture_output=True, text=True, cwd=REPO, check=False
    )
    return proc, log


def test_an_import_that_fails_before_run_stage_reaches_the_log(tmp_path: Path) -> None:
    """Issue 23: a job's log is never empty, even when its script dies importing its stage."""
    proc, log = _script_job(
        tmp_path,
        """
        from segsam.errors import run_stage
        raise ImportError("operator torchvision::nms does not exist")
        """,
    )
    assert proc.returncode != 0 and "torchvision::nms" in proc.stderr
    text = log.read_text(encoding="utf-8")
    assert "Traceback" in text and "ImportError: operator torchvision::nms does not exist" in text


def test_a_bug_inside_run_stage_is_logged_once(tmp_path: Path) -> None:
    proc, log = _script_job(
        tmp_path,
        f"""
        from segsam.errors import run_stage
        def bug():
            raise KeyError("spacing")
        run_stage(bug, log={str(tmp_path / "logs" / "job.log")!r})
        """,
    )
    assert proc.returncode != 0
    assert log.read_text(encoding="utf-8").count("KeyError: 'spacing'") == 1


def test_outside_a_snakemake_job_nothing_is_hooked() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; import segsam; print(sys.excepthook is sys.__excepthook__)"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert proc.stdout.strip() == "True"
