"""The start-up check that every vocabulary class has a description (segsam.text.coverage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segsam.data.vocabulary import Vocabulary
from segsam.errors import ConfigError
from segsam.text.coverage import missing_descriptions

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "config" / "descriptions" / "vocabulary_descriptions.json"


def test_the_committed_file_describes_the_committed_vocabulary() -> None:
    assert missing_descriptions(Vocabulary.read(REPO / "config" / "vocabulary.csv").names, [COMMITTED]) == []


def test_an_extra_class_is_missing_until_a_file_describes_it(tmp_path: Path) -> None:
    names = Vocabulary.read(REPO / "config" / "vocabulary.csv", {"brain_oedema": 31}).names
    assert missing_descriptions(names, [COMMITTED, tmp_path / "absent.json"]) == ["brain_oedema"]
    own = tmp_path / "own.json"
    own.write_text('{"entries": [{"class_name": "brain_oedema"}]}', encoding="utf-8")
    assert missing_descriptions(names, [COMMITTED, own]) == []


def test_a_file_that_is_not_a_description_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json"):
        missing_descriptions(["liver"], [bad])
