"""Tests of the global vocabulary and the label maps (segsam.data.vocabulary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segsam.data.vocabulary import ClassIds, LabelMap, Vocabulary, read_classes
from segsam.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
VOCABULARY_CSV = REPO / "config" / "vocabulary.csv"
LABELMAP_FILES = sorted((REPO / "config" / "labelmaps").glob("*.json"))


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vocabulary.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _labelmap(tmp_path: Path, labels: dict[str, str | None]) -> Path:
    path = tmp_path / "labelmap.json"
    path.write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return path


@pytest.fixture
def vocab(tmp_path: Path) -> Vocabulary:
    return Vocabulary.read(_csv(tmp_path, "class_id,name,parent\n2,spleen,\n1,liver,\n3,kidney_right,kidney\n"))


def test_reads_the_project_vocabulary() -> None:
    vocab = Vocabulary.read(VOCABULARY_CSV)
    assert len(vocab) == len(VOCABULARY_CSV.read_text(encoding="utf-8").strip().splitlines()) - 1
    assert vocab.ids == sorted(vocab.ids)
    assert vocab.ids[0] >= 1
    for name in ("liver", "spleen", "kidney_right", "kidney_left", "vertebrae"):
        assert vocab.name_of(vocab.id_of(name)) == name
    assert vocab.table.loc[vocab.table["name"] == "kidney_left", "parent"].item() == "kidney"
    assert vocab.table.loc[vocab.table["name"] == "liver", "parent"].item() == ""


def test_sorted_by_id_and_lookups(vocab: Vocabulary) -> None:
    assert vocab.ids == [1, 2, 3]
    assert vocab.names == ["liver", "spleen", "kidney_right"]
    assert vocab.id_of("spleen") == 2
    assert vocab.name_of(3) == "kidney_right"
    with pytest.raises(DataError, match="'pancreas'"):
        vocab.id_of("pancreas")
    with pytest.raises(DataError, match="99"):
        vocab.name_of(99)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("class_id,name,parent\n1,liver,\n1,spleen,\n", "unique"),
        ("class_id,name,parent\n1,liver,\n2,liver,\n", "unique"),
        ("class_id,name,parent\n0,background,\n1,liver,\n", "0 is background"),
        ("class_id,name\n1,liver\n", "lacks columns"),
        ("class_id,name,parent\none,liver,\n", "cannot read"),
    ],
    ids=["duplicate-id", "duplicate-name", "id-zero", "missing-column", "non-integer-id"],
)
def test_bad_vocabulary_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as info:
        Vocabulary.read(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_missing_vocabulary_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent.csv"):
        Vocabulary.read(tmp_path / "absent.csv")


def test_lookup_table_maps_values_and_nulls_to_background(tmp_path: Path, vocab: Vocabulary) -> None:
    labelmap = LabelMap.read(_labelmap(tmp_path, {"5": "liver", "7": "kidney_right", "9": None, "2": "spleen"}), vocab)
    assert labelmap.mapping == {5: 1, 7: 3, 9: None, 2: 2}
    lut = labelmap.lookup_table(np.array([0, 2, 5, 9]), where="seg.nii.gz")
    assert lut.dtype == np.uint16
    assert lut[0] == 0
    assert (lut[2], lut[5], lut[7], lut[9]) == (2, 1, 3, 0)
    volume = np.array([[0, 5, 9], [7, 2, 5]])
    assert lut[volume].tolist() == [[0, 1, 0], [3, 2, 1]]


def test_values_missing_from_the_labelmap_are_named(tmp_path: Path, vocab: Vocabulary) -> None:
    path = _labelmap(tmp_path, {"1": "liver"})
    labelmap = LabelMap.read(path, vocab)
    with pytest.raises(DataError) as info:
        labelmap.lookup_table(np.array([0, 1, 4, 12]), where="/data/case_7_seg.nii.gz")
    message = str(info.value)
    assert "[4, 12]" in message
    assert "/data/case_7_seg.nii.gz" in message
    assert str(path) in message


def test_labelmap_with_unknown_class_name(tmp_path: Path, vocab: Vocabulary) -> None:
    with pytest.raises(DataError, match="'brain'"):
        LabelMap.read(_labelmap(tmp_path, {"1": "brain"}), vocab)


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"classes": {"1": "liver"}})], ids=["bad-json", "no-labels"]
)
def test_malformed_labelmap_names_the_file(tmp_path: Path, vocab: Vocabulary, content: str) -> None:
    path = tmp_path / "labelmap.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="labelmap.json"):
        LabelMap.read(path, vocab)


@pytest.mark.parametrize("path", LABELMAP_FILES, ids=[p.name for p in LABELMAP_FILES])
def test_every_project_labelmap_loads(path: Path) -> None:
    vocab = Vocabulary.read(VOCABULARY_CSV)
    labelmap = LabelMap.read(path, vocab)
    raw = json.loads(path.read_text(encoding="utf-8"))["labels"]
    assert len(labelmap.mapping) == len(raw) > 0
    assert 0 not in labelmap.mapping
    assert {v for v in labelmap.mapping.values() if v is not None} <= set(vocab.ids)


def test_project_labelmaps_exist() -> None:
    assert {p.name for p in LABELMAP_FILES} >= {"demo.json", "totalseg_total.json", "totalseg_total_mr.json"}


def test_class_index_follows_vocabulary_order() -> None:
    vocabulary = Vocabulary.read(VOCABULARY_CSV)
    index = vocabulary.class_index
    assert [index[c] for c in vocabulary.ids] == list(range(len(vocabulary)))


# --- classes a user adds in the config (vocabulary_extra) ---------------------------------------


def test_extra_classes_join_the_vocabulary_everywhere_it_is_read(tmp_path: Path) -> None:
    vocab = Vocabulary.read(VOCABULARY_CSV, {"brain_oedema": 31})
    assert vocab.id_of("brain_oedema") == 31 and vocab.ids[-1] == 31 and len(vocab) == 31
    assert vocab.class_index[31] == 30
    assert (
        Vocabulary.from_config({"vocabulary": str(VOCABULARY_CSV), "vocabulary_extra": {"brain_oedema": 31}}).names[-1]
        == "brain_oedema"
    )
    labelmap = LabelMap.read(_labelmap(tmp_path, {"1": "liver", "7": "brain_oedema"}), vocab)
    assert labelmap.mapping == {1: 1, 7: 31}
    assert read_classes(VOCABULARY_CSV, {"brain_oedema": 31})[-1] == {
        "class_id": 31,
        "name": "brain_oedema",
        "parent": "",
    }


@pytest.mark.parametrize(
    ("extra", "problem"),
    [({"liver": 31}, "already in"), ({"brain_oedema": 1}, "already class 'liver'"), ({"x": 0}, ">= 1")],
    ids=["taken-name", "taken-id", "id-zero"],
)
def test_an_extra_class_must_be_new(extra: dict[str, int], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Vocabulary.read(VOCABULARY_CSV, extra)
    message = str(info.value)
    assert problem in message and f"vocabulary_extra.{next(iter(extra))}" in message and "\n" not in message


def test_inline_label_map_names_its_source(vocab: Vocabulary) -> None:
    labelmap = LabelMap.from_labels({"1": "liver", "4": None}, vocab, "/data/dataset.json")
    assert labelmap.mapping == {1: 1, 4: None}
    with pytest.raises(DataError, match=r"/data/dataset.json"):
        labelmap.lookup_table(np.array([0, 1, 9]), where="/data/seg.nii.gz")


def test_class_ids_read_without_pandas_match_the_vocabulary() -> None:
    """The workflow's start-up label-map check uses ClassIds: same ids, same error as Vocabulary."""
    vocabulary, class_ids = Vocabulary.read(VOCABULARY_CSV), ClassIds.from_rows(read_classes(VOCABULARY_CSV))
    assert {name: class_ids.id_of(name) for name in vocabulary.names} == dict(zip(vocabulary.names, vocabulary.ids))
    for lookup in (vocabulary, class_ids):
        with pytest.raises(DataError, match="class 'livre' is not in the vocabulary"):
            lookup.id_of("livre")
