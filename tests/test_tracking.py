"""Tests of MLflow tracking (segsam.tracking) against a real sqlite store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from segsam.config import config_hash, flatten
from segsam.hashing import sha256_of
from segsam.tracking import TrackingError, init_store, is_rank0, log_index, start_run


@pytest.fixture(autouse=True)
def _restore_mlflow_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """start_run sets the process-wide tracking URI and experiment: put them back afterwards."""
    monkeypatch.delenv("RANK", raising=False)
    previous = mlflow.get_tracking_uri()
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One sqlite store for the module (creating the schema is the slow part)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'db' / 'mlflow.db'}"
    experiment_id = init_store(uri, "segsam-test", root / "artifacts", root / "marker.json")
    return {"root": root, "uri": uri, "experiment": "segsam-test", "experiment_id": experiment_id}


def _config(config: dict[str, Any], store: dict[str, Any]) -> dict[str, Any]:
    config["tracking"] = {
        "uri": store["uri"],
        "experiment": store["experiment"],
        "artifacts": str(store["root"] / "artifacts"),
    }
    return config


def test_init_store_creates_db_experiment_and_marker(store: dict[str, Any]) -> None:
    root = store["root"]
    assert (root / "db" / "mlflow.db").is_file()
    assert (root / "artifacts").is_dir()
    experiment = mlflow.MlflowClient(tracking_uri=store["uri"]).get_experiment_by_name("segsam-test")
    assert experiment is not None and experiment.experiment_id == store["experiment_id"]
    assert experiment.artifact_location == (root / "artifacts").resolve().as_uri()
    marker = json.loads((root / "marker.json").read_text(encoding="utf-8"))
    assert marker == {
        "tracking_uri": store["uri"],
        "experiment": "segsam-test",
        "experiment_id": store["experiment_id"],
    }


def test_init_store_is_idempotent(store: dict[str, Any]) -> None:
    root = store["root"]
    again = init_store(store["uri"], "segsam-test", root / "artifacts", root / "marker2.json")
    assert again == store["experiment_id"]
    experiments = mlflow.MlflowClient(tracking_uri=store["uri"]).search_experiments()
    assert [e.name for e in experiments].count("segsam-test") == 1
    assert (root / "marker2.json").is_file()


def test_relative_uri_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    init_store("sqlite:///results/mlflow.db", "rel", "results/artifacts", "results/marker.json")
    marker = json.loads((tmp_path / "results" / "marker.json").read_text(encoding="utf-8"))
    assert marker["tracking_uri"] == f"sqlite:///{(tmp_path / 'results' / 'mlflow.db').resolve()}"
    assert (tmp_path / "results" / "mlflow.db").is_file()


def test_start_run_names_tags_and_params(store: dict[str, Any], config: dict[str, Any]) -> None:
    config = _config(config, store)
    with start_run(config, "train", "ft_decoder", extra_tags={"note": "unit test"}) as run:
        assert run is not None
        mlflow.log_metric("loss", 0.5)
        run_id = run.info.run_id
    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    logged = client.get_run(run_id)
    assert logged.info.experiment_id == store["experiment_id"]
    assert logged.info.run_name == "train/ft_decoder"
    assert logged.info.status == "FINISHED"
    tags = logged.data.tags
    assert tags["stage"] == "train"
    assert tags["method"] == "ft_decoder"
    assert tags["dataset"] == config["dataset"]["name"]
    assert tags["config_hash"] == config_hash(config)
    assert tags["git_commit"]
    assert tags["note"] == "unit test"
    assert logged.data.params == flatten(config)
    assert logged.data.metrics == {"loss": 0.5}


def test_failed_run_is_marked_failed(store: dict[str, Any], config: dict[str, Any]) -> None:
    config = _config(config, store)
    with pytest.raises(RuntimeError, match="boom"):
        with start_run(config, "evaluate", "medsam_lite") as run:
            run_id = run.info.run_id
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(tracking_uri=store["uri"]).get_run(run_id).info.status == "FAILED"


def test_other_ranks_log_nothing(tmp_path: Path, config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert not is_rank0()
    db = tmp_path / "rank1.db"
    config["tracking"] = {"uri": f"sqlite:///{db}", "experiment": "never", "artifacts": str(tmp_path / "art")}
    with start_run(config, "train", "ft_decoder") as run:
        assert run is None
    assert mlflow.active_run() is None
    assert not db.exists()  # not even a database was created


def test_rank_zero_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_rank0()
    monkeypatch.setenv("RANK", "0")
    assert is_rank0()
    monkeypatch.setenv("RANK", "3")
    assert not is_rank0()


def test_experiment_opens_on_the_runs_table(store: dict[str, Any]) -> None:
    experiment = mlflow.MlflowClient(tracking_uri=store["uri"]).get_experiment(store["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_run_source_names_the_rule_and_module(store: dict[str, Any], config: dict[str, Any]) -> None:
    with start_run(_config(config, store), "evaluate", "segsam") as run:
        run_id = run.info.run_id
    tags = mlflow.MlflowClient(tracking_uri=store["uri"]).get_run(run_id).data.tags
    assert tags["mlflow.source.name"] == "workflow/rules/evaluate.smk: rule evaluate (segsam.evaluate)"
    assert tags["mlflow.source.type"] == "LOCAL"


def test_index_is_logged_as_a_dataset(store: dict[str, Any], config: dict[str, Any], tmp_path: Path) -> None:
    table = pd.DataFrame({"image": ["a.png", "b.png", "c.png"], "split": ["train", "train", "test"]})
    path = tmp_path / "masks.parquet"
    table.to_parquet(path)
    with start_run(_config(config, store), "train", "ft_decoder") as run:
        log_index(table[table["split"] == "train"], path, name="demo/train", context="training")
        run_id = run.info.run_id
    (entry,) = mlflow.MlflowClient(tracking_uri=store["uri"]).get_run(run_id).inputs.dataset_inputs
    assert entry.dataset.name == "demo/train" and entry.dataset.digest == sha256_of(path)[:12]
    assert str(path.resolve()) in entry.dataset.source
    assert json.loads(entry.dataset.profile)["num_rows"] == 2
    assert [tag.value for tag in entry.tags if tag.key == "mlflow.data.context"] == ["training"]


def _tracking(config: dict[str, Any], db: Path) -> dict[str, Any]:
    config["tracking"] = {"uri": f"sqlite:///{db}", "experiment": "x", "artifacts": str(db.parent / "art")}
    return config


def test_a_store_that_is_not_sqlite_stops_in_one_line(tmp_path: Path, config: dict[str, Any]) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    for call in (
        lambda: init_store(f"sqlite:///{db}", "x", tmp_path / "art", tmp_path / "marker.json"),
        lambda: start_run(_tracking(config, db), "train", "ft_decoder").__enter__(),
    ):
        with pytest.raises(TrackingError) as err:
            call()
        message = str(err.value)
        assert str(db) in message and f"mv {db} {db}.damaged" in message and "\n" not in message
    assert db.read_bytes().startswith(b"this is not")  # left as it was: nothing deleted or replaced
    assert not (tmp_path / "marker.json").exists()


def test_a_damaged_sqlite_store_stops_in_one_line(tmp_path: Path, config: dict[str, Any]) -> None:
    db = tmp_path / "mlflow.db"
    init_store(f"sqlite:///{db}", "x", tmp_path / "art", tmp_path / "marker.json")
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # keep the header page, overwrite every other page
    db.write_bytes(bytes(data))
    with pytest.raises(TrackingError, match="damaged") as err:
        start_run(_tracking(config, db), "train", "ft_decoder").__enter__()
    assert str(db) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_store_is_not_silently_replaced(tmp_path: Path, config: dict[str, Any]) -> None:
    db = tmp_path / "gone" / "mlflow.db"
    with pytest.raises(TrackingError, match="missing") as err:
        start_run(_tracking(config, db), "evaluate", "segsam").__enter__()
    assert "--forcerun mlflow_init" in str(err.value)
    assert not db.exists()


_LOG_AT = """
import sys, time
import pandas as pd
from segsam.config import load_config
from segsam.tracking import log_index, start_run
uri, experiment, artifacts, path, at = sys.argv[1:]
config = load_config()
config["tracking"] = {"uri": uri, "experiment": experiment, "artifacts": artifacts}
with start_run(config, "evaluate", "ft_decoder") as run:
    table = pd.read_parquet(path)
    time.sleep(max(0.0, float(at) - time.time()))  # every process logs the same dataset at the same moment
    log_index(table, path, name="demo/test", context="evaluation")
"""


def test_jobs_side_by_side_log_the_same_dataset(store: dict[str, Any], tmp_path: Path) -> None:
    """Evaluate jobs running together insert the same dataset row: each run gets it, none fails."""
    path = tmp_path / "prompts.parquet"
    pd.DataFrame({"image": ["a.png", "b.png"]}).to_parquet(path)
    at = time.time() + 20  # after every process has imported MLflow and opened its run
    args = [store["uri"], store["experiment"], str(store["root"] / "artifacts"), str(path), str(at)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _LOG_AT, *args], stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    errors = [proc.communicate(timeout=180)[1] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), "\n".join(e[-600:] for e in errors)
    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    runs = client.search_runs([store["experiment_id"]], filter_string="tags.stage = 'evaluate'")
    logged = [r for r in runs if any(d.dataset.name == "demo/test" for d in r.inputs.dataset_inputs)]
    assert len(logged) == 4
