"""Label names matched onto the vocabulary through config/synonyms.yaml (segsam.data.synonyms)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segsam.data.synonyms import NameMatcher, normalise_name
from segsam.data.vocabulary import Vocabulary
from segsam.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SYNONYMS = REPO / "config" / "synonyms.yaml"


@pytest.fixture(scope="module")
def names() -> NameMatcher:
    return NameMatcher.read(SYNONYMS, Vocabulary.read(REPO / "config" / "vocabulary.csv").names)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Kidney (L)", "kidney l"), ("kidney_left", "kidney left"), ("  LEFT-Kidney ", "left kidney"), ("IVC", "ivc")],
)
def test_normalise_ignores_case_and_punctuation(name: str, expected: str) -> None:
    assert normalise_name(name) == expected


@pytest.mark.parametrize("name", ["left kidney", "kidney_left", "Kidney (L)", "kidney l", "KIDNEY-LEFT", "L kidney"])
def test_the_wordings_of_the_left_kidney(names: NameMatcher, name: str) -> None:
    assert names.match(name) == "kidney_left"


def test_vocabulary_names_match_themselves_and_unknown_names_are_returned(names: NameMatcher) -> None:
    matched, unknown = names.match_all(["liver", "right kidney", "Spleen", "tumour", "brain oedema"])
    assert matched == {"liver": "liver", "right kidney": "kidney_right", "Spleen": "spleen"}
    assert unknown == ["tumour", "brain oedema"]


def test_committed_table_names_only_vocabulary_classes() -> None:
    table = yaml.safe_load(SYNONYMS.read_text(encoding="utf-8"))
    vocabulary = set(Vocabulary.read(REPO / "config" / "vocabulary.csv").names)
    assert set(table) <= vocabulary, sorted(set(table) - vocabulary)


def test_an_extra_class_matches_its_own_name(names: NameMatcher) -> None:
    extended = NameMatcher.read(SYNONYMS, [*names.lookup.values(), "brain_oedema"])
    assert extended.match("Brain oedema") == "brain_oedema"


def test_a_name_under_two_classes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "synonyms.yaml"
    path.write_text("liver: [organ]\nspleen: [Organ]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        NameMatcher.read(path, ["liver", "spleen"])
    assert str(path) in str(err.value) and "'organ'" in str(err.value) and "\n" not in str(err.value)
