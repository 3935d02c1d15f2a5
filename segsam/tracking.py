"""MLflow tracking: one sqlite store, created once, runs named deterministically.

* The store is ``tracking.uri`` (``sqlite:///...``; MLflow 3 refuses folder
  stores). :func:`init_store` creates the database and the experiment once,
  before parallel jobs write to it (the ``mlflow_init`` rule).
* Every train and evaluate job is one run, named ``<stage>/<method>`` with
  tags for stage, method, dataset, config hash and git commit, and the
  flattened config as params. Only rank 0 of a distributed job logs.
* Nothing secret is ever logged: API keys live only in the environment and
  the config holds only the *name* of the variable.
* The experiment is marked as a model-development experiment, so the MLflow UI
  opens it on the runs table; each run's source names the rule and the
  ``segsam`` module it runs; training and evaluation log the index they read as
  an MLflow dataset (:func:`log_index`).
* A store that is damaged or gone stops the job with one line naming the file
  and the safe way out (:class:`TrackingError`); runs are never dropped
  silently by starting a fresh store in place of a missing one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from segsam.atomic import write_json
from segsam.config import REPO_ROOT, config_hash, flatten
from segsam.errors import SegsamError

log = logging.getLogger(__name__)

for _name in ("alembic", "mlflow", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

#: Experiment tag that makes the MLflow UI open the experiment on its runs table (not the GenAI pages).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: Where each stage's runs come from: the rule and the ``segsam`` module (the run's "source" in the UI).
SOURCES = {
    "train": "workflow/rules/train.smk: rule train (segsam.train)",
    "evaluate": "workflow/rules/evaluate.smk: rule evaluate (segsam.evaluate)",
}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class TrackingError(SegsamError):
    """The MLflow store is damaged, missing or unreadable."""


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


def _store_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def check_store(uri: str, *, must_exist: bool) -> None:
    """Stop with one line when the sqlite file behind ``uri`` is damaged (or missing, with ``must_exist``).

    A damaged store is never replaced: the message says to move it aside, so
    that its runs can still be recovered from the moved file.

    Raises:
        TrackingError: naming the file and what to do.
    """
    import sqlite3

    path = _store_path(uri)
    if not path.exists():
        if must_exist:
            raise TrackingError(
                f"{path}: the MLflow store is missing (rule mlflow_init created it); restore the file, or "
                "start a new, empty store with `snakemake --forcerun mlflow_init` (earlier runs are not in it)"
            )
        return
    aside = f"mv {path} {path}.damaged"
    with open(path, "rb") as stream:
        head = stream.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise TrackingError(f"{path}: not an SQLite file, so not an MLflow store; keep it aside (`{aside}`) and rerun")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        verdict = str(err)
    if verdict != "ok":
        raise TrackingError(
            f"{path}: the MLflow store is damaged ({verdict}); keep it aside (`{aside}`) and rerun "
            "to start a new store (the runs of the old one stay in the moved file)"
        )


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Turn MLflow's and SQLAlchemy's errors about the store into one :class:`TrackingError` line."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        path = _store_path(uri)
        raise TrackingError(
            f"{path}: the MLflow store cannot be used ({first[:200]}); if the file is damaged keep it aside "
            f"(`mv {path} {path}.damaged`) and rerun"
        ) from err


def init_store(uri: str, experiment: str, artifacts: str | Path, marker: str | Path) -> str:
    """Create the sqlite store and the experiment (idempotent); write ``marker``.

    Returns:
        The experiment id.
    """
    import mlflow

    uri = _absolute_sqlite_uri(uri)
    _store_path(uri).parent.mkdir(parents=True, exist_ok=True)
    check_store(uri, must_exist=False)
    artifact_root = Path(artifacts).resolve()
    artifact_root.mkdir(parents=True, exist_ok=True)
    with _store_errors(uri):
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_root.as_uri(), tags=EXPERIMENT_KIND
            )
        else:
            experiment_id = found.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if found.tags.get(key) != value:
                    client.set_experiment_tag(experiment_id, key, value)
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
    uri = _absolute_sqlite_uri(tracking["uri"])
    check_store(uri, must_exist=True)
    commit = git_commit()
    tags = {
        "stage": stage,
        "method": method,
        "dataset": config["dataset"]["name"],
        "config_hash": config_hash(config),
        "git_commit": commit,
        "run_name": config["run_name"],
        "mlflow.source.name": SOURCES.get(stage, stage),
        "mlflow.source.type": "LOCAL",
        **({"mlflow.source.git.commit": commit.removesuffix("+dirty")} if commit != "unknown" else {}),
        **({"eval_dataset": eval_dataset} if eval_dataset else {}),
        **(extra_tags or {}),
    }
    with _store_errors(uri):
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(tracking["experiment"])
        if run_id is not None:
            with mlflow.start_run(run_id=run_id) as run:
                yield run
            return
        name = f"{stage}/{method}" + (f"/{eval_dataset}" if eval_dataset else "")
        with mlflow.start_run(run_name=name, tags=tags) as run:
            items = sorted(flatten(config).items())
            for first in range(0, len(items), 100):
                mlflow.log_params(dict(items[first : first + 100]))
            yield run


def log_index(table: Any, path: str | Path, *, name: str, context: str) -> None:
    """Log the rows a run read as an MLflow dataset input: the UI's dataset column shows what it saw.

    Args:
        table: The rows the run used (a pandas DataFrame: the train split, or the saved test prompts).
        path: The file they come from (the dataset's source).
        name: The dataset's name in the UI (e.g. ``demo/train``).
        context: ``training`` or ``evaluation``.
    """
    from mlflow.data.dataset_source_registry import get_registered_sources
    from mlflow.data.pandas_dataset import from_pandas

    from segsam.hashing import sha256_of

    # a local file: named explicitly, as MLflow registers two sources that both claim local paths
    local = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    source = local(Path(path).resolve().as_uri())
    with warnings.catch_warnings():  # MLflow's schema inference warns about integer columns: not a model input
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(table, source=source, name=name, digest=sha256_of(path)[:12])
        _log_input(dataset, context)


#: What SQLite says when a job beside this one inserted the same dataset row first.
_TAKEN = "UNIQUE constraint failed: datasets."


def _log_input(dataset: Any, context: str, attempts: int = 3) -> None:
    """``mlflow.log_input``, again when another job inserted the same dataset between MLflow's lookup and
    its insert (evaluate jobs running together log one prompts file): the retry finds that row and links it."""
    import mlflow

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except Exception as err:  # MLflow wraps SQLAlchemy's IntegrityError in its own exception
            if _TAKEN not in str(err) or attempt == attempts - 1:
                raise
