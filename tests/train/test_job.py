"""The training job description (segsam.train.job): JSON round trip, fingerprint, validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from segsam.config import load_config
from segsam.hashing import sha256_of, stable_hash
from segsam.train.job import TrainJob, result_settings, train_fingerprint


def _index(root: Path) -> Path:
    path = root / "masks.parquet"
    pd.DataFrame({"image": ["a"], "split": ["train"]}).to_parquet(path)
    return path


def test_json_round_trip_gives_the_same_job(tmp_path: Path) -> None:
    job = TrainJob.create(
        "segsam",
        _index(tmp_path),
        tmp_path / "cache",
        tmp_path / "out" / "checkpoint.pt",
        "out/summary.json",
        config=load_config(),
        threads=4,
        state_dir=tmp_path / "state",
        code="abc",
        text_parquet=None,
    )
    back = TrainJob.from_json(job.to_json())
    assert back == job
    assert isinstance(back.summary, Path) and back.text_parquet is None and back.threads == 4
    no_cache = TrainJob("unet", "m.parquet", None, "c.pt", "s.json", config={"train": {}})
    assert TrainJob.from_json(no_cache.to_json()) == no_cache and no_cache.cache_dir is None


def test_fingerprint_keys_settings_code_and_index(tmp_path: Path) -> None:
    config = load_config()
    masks = _index(tmp_path)
    expected = stable_hash(
        {
            "train": result_settings(config["train"]),
            "encoder": config["encoder"],
            "loss": config["loss"],
            "cache": True,
            "code": "abc",
            "index": sha256_of(masks),
            "text": None,
        }
    )
    assert train_fingerprint(config, "abc", masks, None) == expected
    job = TrainJob.create("segsam", masks, None, "c.pt", "s.json", config=config, code="abc")
    assert job.fingerprint == expected
    assert train_fingerprint(config, "abd", masks, None) != expected
    changed = copy.deepcopy(config)
    changed["train"]["lr"] = 2 * changed["train"]["lr"]
    assert train_fingerprint(changed, "abc", masks, None) != expected
    changed = copy.deepcopy(config)
    changed["run_name"] = "another"  # settings that do not shape training
    assert train_fingerprint(changed, "abc", masks, None) == expected


def test_job_validation() -> None:
    with pytest.raises(ValueError, match="method name"):
        TrainJob("", "m.parquet", None, "c.pt", "s.json", config={})
    with pytest.raises(ValueError, match="at least one thread"):
        TrainJob("unet", "m.parquet", None, "c.pt", "s.json", config={}, threads=0)
