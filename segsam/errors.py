"""Errors a user can act on, and the wrapper every workflow script runs in.

A :class:`SegsamError` carries a one-line message that names the file (or config
key) and the problem, and says what to do. Workflow scripts run their stage
through :func:`run_stage`, which turns such an error into that one line on
stderr and in the rule's log, and a non-zero exit, instead of a traceback. Any
other exception is a bug: its traceback goes to the rule's log too (a failed
job's log is never empty), and the job fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    except Exception:
        logger.exception("unexpected error in %s (a bug: please report it with this log)", func.__qualname__)
        raise
