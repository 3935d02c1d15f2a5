"""Which vocabulary classes have a description, checked when the workflow starts.

Rule ``describe_classes`` (:func:`segsam.text.describe.describe_vocabulary`)
fails when a class has no description and the LLM is off; a class added with
``vocabulary_extra`` would then stop the run deep in a job. The workflow asks
:func:`missing_descriptions` at start-up instead. It reads the description
files with the standard library only; the stage still checks the exact cache
key (template hash, model), which this quick check does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from segsam.errors import ConfigError

__all__ = ["described_classes", "missing_descriptions"]


def described_classes(path: str | Path) -> set[str]:
    """The class names a description file (``text.descriptions_file`` format) has an entry for.

    A missing file has none.

    Raises:
        ConfigError: the file is not a description file (naming it).
    """
    path = Path(path)
    if not path.is_file():
        return set()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
        return {str(entry["class_name"]) for entry in entries}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a class description file (see docs/class_knowledge.md): {err}") from err


def missing_descriptions(names: Iterable[str], files: Sequence[str | Path]) -> list[str]:
    """The class names none of ``files`` describes, in the given order."""
    described: set[str] = set()
    for path in files:
        described |= described_classes(path)
    return [name for name in names if name not in described]
