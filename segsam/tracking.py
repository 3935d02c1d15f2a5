"""MLflow tracking: one sqlite store, created once, runs named deterministically.

* The store is ``tracking.uri`` (``sqlite:///...``; MLflow 3 refuses folder
  stores). :func:`init_store` creates the database and the experiment once,
  before parallel jobs write to it (the ``mlflow_init`` rule).
* Every train and evaluate job is one run, named ``<stage>/<method>`` with
  tags for stage, method, dataset, config hash and git commit, and the
  flattened config as params. Only rank 0 of a distributed job logs.
* Nothing secret is ever logged: API keys live only in the environment and
  the config holds only the *name* of the variable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from segsam.atomic import write_json
from segsam.config import REPO_ROOT, config_hash, flatten

log = logging.getLogger(__name__)

for _name in ("alembic", "mlflow", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def is_rank0() -> bool:
    """True outside distributed runs and on global rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def git_commit() -> str:
    """The repository's commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def _absolute_sqlite_uri(uri: str) -> str:
    path = Path(uri.removeprefix("sqlite:///"))
    return f"sqlite:///{path.resolve()}"


def init_store(uri: str, experiment: str, artifacts: str | Path, marker: str | Path) -> str:
    """Create the sqlite store and the experiment (idempotent); write ``marker``.

    Returns:
        The experiment id.
    """
    import mlflow

    uri = _absolute_sqlite_uri(uri)
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    artifact_root = Path(artifacts).resolve()
    artifact_root.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_root.as_uri())
    )
    write_json(marker, {"tracking_uri": uri, "experiment": experiment, "experiment_id": experiment_id})
    log.info("MLflow store %s, experiment %r (id %s)", uri, experiment, experiment_id)
    return experiment_id


@contextlib.contextmanager
def start_run(
    config: Mapping[str, Any],
    stage: str,
    method: str,
    extra_tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    eval_dataset: str | None = None,
) -> Iterator[Any]:
    """Open the MLflow run of one job (rank 0 only; other ranks get ``None``).

    Args:
        config: The whole validated config (logged flattened as params).
        stage: ``train`` or ``evaluate``.
        method: Method name.
        extra_tags: More tags (e.g. the training run id an evaluation uses).
        run_id: Continue this run (a resumed training job) instead of starting one.
        eval_dataset: The cross dataset an evaluation scores (tag ``eval_dataset``, run
            name ``<stage>/<method>/<eval_dataset>``); None: the training dataset (no such tag).

    Yields:
        The active ``mlflow.ActiveRun``, or ``None`` on ranks other than 0.
    """
    if not is_rank0():
        yield None
        return
    import mlflow

    tracking = config["tracking"]
    mlflow.set_tracking_uri(_absolute_sqlite_uri(tracking["uri"]))
    mlflow.set_experiment(tracking["experiment"])
    tags = {
        "stage": stage,
        "method": method,
        "dataset": config["dataset"]["name"],
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "run_name": config["run_name"],
        **({"eval_dataset": eval_dataset} if eval_dataset else {}),
        **(extra_tags or {}),
    }
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
        return
    name = f"{stage}/{method}" + (f"/{eval_dataset}" if eval_dataset else "")
    with mlflow.start_run(run_name=name, tags=tags) as run:
        params = flatten(config)
        items = sorted(params.items())
        for first in range(0, len(items), 100):
            mlflow.log_params(dict(items[first : first + 100]))
        yield run
