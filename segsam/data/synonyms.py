"""Label names as datasets write them, matched onto vocabulary names (``config/synonyms.yaml``).

An nnU-Net ``dataset.json`` names its labels ("left kidney", "Kidney (L)") and a
TotalSegmentator-style case names each mask file after its class
(``kidney_left.nii.gz``); the vocabulary has one name per class
(``kidney_left``). The synonyms table lists, per vocabulary name, the other
names a class goes by. Matching ignores case and punctuation: a name is
lower-cased and every run of characters other than letters and digits becomes
one space, so ``Kidney (L)``, ``kidney-l`` and ``KIDNEY_L`` are one name. Every
vocabulary name (including ``vocabulary_extra`` classes) matches itself.

Imports only the standard library and :mod:`segsam.config` (for the YAML), so
that the workflow can map names at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from segsam.config import read_yaml
from segsam.errors import ConfigError

__all__ = ["NameMatcher", "normalise_name"]


def normalise_name(name: str) -> str:
    """A label name for matching: ``"Kidney (L)"`` -> ``"kidney l"``, ``"kidney_left"`` -> ``"kidney left"``."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(name).casefold()).split())


@dataclass(frozen=True)
class NameMatcher:
    """Maps label names onto vocabulary names through the synonyms table.

    Attributes:
        lookup: Normalised name -> vocabulary name.
        source: The synonyms file (named in messages).
    """

    lookup: Mapping[str, str]
    source: Path

    @classmethod
    def read(cls, path: str | Path, vocabulary_names: Iterable[str]) -> NameMatcher:
        """Load a synonyms table (``{vocabulary name: [other names]}``) for a vocabulary.

        Entries of classes the vocabulary lacks are left out (one table serves
        several vocabularies); ``tests/data/test_synonyms.py`` checks that the
        committed table names only classes of ``config/vocabulary.csv``.

        Args:
            path: The YAML table.
            vocabulary_names: The vocabulary's class names (with ``vocabulary_extra``).

        Returns:
            The matcher.

        Raises:
            ConfigError: a malformed table, or one name that would match two classes.
        """
        path = Path(path)
        raw = read_yaml(path, "synonyms table") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected {{vocabulary name: [other names]}}")
        names = list(vocabulary_names)
        lookup: dict[str, str] = {}
        for name in names:
            cls._add(lookup, normalise_name(name), name, path)
        for name, aliases in raw.items():
            if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
                raise ConfigError(f"{path}: entry {name!r}: expected a list of names")
            if name in names:
                for alias in aliases:
                    cls._add(lookup, normalise_name(alias), str(name), path)
        return cls(lookup, path)

    @staticmethod
    def _add(lookup: dict[str, str], key: str, name: str, path: Path) -> None:
        if lookup.get(key, name) != name:
            raise ConfigError(
                f"{path}: the name {key!r} matches two vocabulary classes, {lookup[key]!r} and {name!r}; "
                "keep it under one"
            )
        lookup[key] = name

    def match(self, name: str) -> str | None:
        """The vocabulary name ``name`` stands for, or None."""
        return self.lookup.get(normalise_name(name))

    def match_all(self, names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """Match several names at once.

        Returns:
            (``{name: vocabulary name}`` of the matched ones, the unmatched names in order).
        """
        matched, unknown = {}, []
        for name in names:
            hit = self.match(name)
            if hit is None:
                unknown.append(name)
            else:
                matched[name] = hit
        return matched, unknown
