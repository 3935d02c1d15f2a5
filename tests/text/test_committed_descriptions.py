"""The committed, hand-written description cache covers the default vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

from segsam.config import load_config
from segsam.data.vocabulary import Vocabulary
from segsam.text.cache import FIELDS, HUMAN_CURATED, load_descriptions
from segsam.text.describe import TEMPLATE_HASH, describe_vocabulary

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "config" / "descriptions" / "vocabulary_descriptions.json"
VOCABULARY = ROOT / "config" / "vocabulary.csv"
DEFAULT_LLM = load_config()["text"]["llm"]


def test_committed_file_covers_the_vocabulary() -> None:
    cache = load_descriptions(COMMITTED)
    names = Vocabulary.read(VOCABULARY).names
    assert len(names) == 30
    assert cache.provenance["model"] == HUMAN_CURATED and "note" in cache.provenance
    by_class = {key.class_name: entry for key, entry in cache.entries.items()}
    assert sorted(by_class) == sorted(names)
    for name, entry in by_class.items():
        # if this fails after a prompt change: review the texts and update their template_hash
        assert entry.provenance.template_hash == TEMPLATE_HASH, name
        assert entry.provenance.model == HUMAN_CURATED and entry.provenance.note
        assert entry.provenance.base_url_host is None and entry.provenance.with_image is False
        assert all(entry.fields()[field].strip() for field in FIELDS)


def test_committed_file_is_sorted_and_canonical() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    keys = [(e["class_name"], e["provenance"]["model"]) for e in data["entries"]]
    assert keys == sorted(keys)


def test_default_config_runs_offline_from_the_committed_file(tmp_path: Path) -> None:
    cache = tmp_path / "committed.json"
    cache.write_bytes(COMMITTED.read_bytes())
    out = tmp_path / "descriptions.json"
    describe_vocabulary(VOCABULARY, cache, out, DEFAULT_LLM, generated_file=tmp_path / "generated.json")
    data = json.loads(out.read_text())
    assert len(data) == 30
    assert data["liver"]["class_id"] == 1 and data["sacrum"]["class_id"] == 30
    assert cache.read_bytes() == COMMITTED.read_bytes()
