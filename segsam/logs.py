"""Logging set-up shared by every workflow script and the CLI."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send ``segsam`` log records to stderr and, when given, to ``log_file``.

    Args:
        log_file: The rule's ``log:`` file. Its folder is created.
        level: Logging level of the ``segsam`` logger.

    Returns:
        The ``segsam`` logger.
    """
    logger = logging.getLogger("segsam")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(stream)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(file_handler)
    logger.propagate = False
    return logger
