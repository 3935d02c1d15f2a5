"""Errors a user can act on, and the wrapper every workflow script runs in.

A :class:`SegsamError` carries a one-line message that names the file (or config
key) and the problem, and says what to do. Workflow scripts run their stage
through :func:`run_stage`, which turns such an error into that one line on
stderr and in the rule's log, and a non-zero exit, instead of a traceback. Any
other exception is a bug: its traceback goes to the rule's log too (a failed
job's log is never empty), and the job fails. An exception raised before
``run_stage`` takes over, such as an import that fails, reaches the log through
:func:`log_early_failures`, which importing ``segsam`` installs in a Snakemake
script job.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from segsam.logs import setup_logging
from segsam.runtime import keep_large_allocations

T = TypeVar("T")


class SegsamError(Exception):
    """Base class of the errors whose message is meant for the user."""


class ConfigError(SegsamError):
    """The configuration is invalid (unknown key, wrong type, unknown method, ...)."""


class DataError(SegsamError):
    """An input file is unreadable, inconsistent or does not follow the data conventions."""


def run_stage(func: Callable[..., T], *args: Any, log: str | None = None, **kwargs: Any) -> T:
    """Run one workflow stage with logging to ``log``; user errors exit 1 with one line.

    The process first keeps large freed blocks for reuse
    (:func:`segsam.runtime.keep_large_allocations`), as every stage allocates
    and frees big tensors over and over.

    Args:
        func: The ``segsam`` function implementing the stage.
        *args: Positional arguments of ``func``.
        log: The rule's log file.
        **kwargs: Keyword arguments of ``func``.

    Returns:
        What ``func`` returns.
    """
    logger = setup_logging(log)
    keep_large_allocations()
    try:
        return func(*args, **kwargs)
    except SegsamError as err:
        logger.error("%s: %s", type(err).__name__, err)
        sys.exit(1)
    except Exception as err:
        logger.exception("unexpected error in %s (a bug: please report it with this log)", func.__qualname__)
        err.add_note(LOGGED)  # log_early_failures' hook does not write it a second time
        raise


#: The note :func:`run_stage` adds to an exception it has already written to the rule's log.
LOGGED = "(written to the rule's log by segsam.errors.run_stage)"


def log_early_failures() -> None:
    """In a Snakemake script job, write an uncaught exception to the rule's log as well as stderr.

    ``run_stage`` logs what its stage raises, but a script fails earlier when
    one of its imports does (a broken install, e.g. a torchvision that does not
    match torch): without this hook that job's log would stay empty. A no-op
    outside a Snakemake script (no ``snakemake`` object in ``__main__``) or for
    a rule without ``log:``.
    """
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    logs = list(getattr(job, "log", None) or [])
    if not logs:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if LOGGED not in getattr(value, "__notes__", ()):
            try:
                Path(logs[0]).parent.mkdir(parents=True, exist_ok=True)
                with open(logs[0], "a", encoding="utf-8") as fh:
                    fh.write("".join(traceback.format_exception(kind, value, tb)))
            except OSError:
                pass  # the traceback still reaches stderr
        previous(kind, value, tb)

    sys.excepthook = hook
