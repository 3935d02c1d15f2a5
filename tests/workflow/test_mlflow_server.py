"""The real `mlflow server` on the workflow's sqlite store: its REST API, and its UI in headless Chromium.

The UI must open the experiment on the runs table (not the GenAI overview),
with every run named, spanning its job, and the dataset it read in the
dataset column.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workflow.test_report import CHROMIUM, FLAGS

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def mlflow_server(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on the tiny run's store; yields its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tiny_run / 'results/mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path_factory.mktemp("mlflow_server"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start in 90 s"
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _runs(base: str) -> tuple[dict, dict[str, dict]]:
    experiment = json.loads(
        urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=segsam", timeout=10
        ).read()
    )["experiment"]
    runs = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    return experiment, {run["info"]["run_name"]: run for run in runs}


def test_mlflow_server_lists_the_workflow_runs(mlflow_server: str) -> None:
    experiment, by_name = _runs(mlflow_server)
    assert {"train/ft_decoder", "evaluate/medsam_lite", "evaluate/ft_decoder"} <= set(by_name)
    assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    tags = {t["key"]: t["value"] for t in by_name["evaluate/ft_decoder"]["data"]["tags"]}
    assert tags["train_run_id"] == by_name["train/ft_decoder"]["info"]["run_id"]
    assert tags["mlflow.source.name"].startswith("workflow/rules/evaluate.smk")
    metrics = {m["key"] for m in by_name["evaluate/ft_decoder"]["data"]["metrics"]}
    assert "dsc/box/avg" in metrics
    for name in ("train/ft_decoder", "evaluate/ft_decoder"):
        info = by_name[name]["info"]
        assert int(info["end_time"]) - int(info["start_time"]) > 1000  # the run spans the job, not its last step
        (dataset,) = by_name[name]["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == ("demo/train" if name.startswith("train") else "demo/test")
        assert int(json.loads(dataset["dataset"]["profile"])["num_rows"]) > 0


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
)
def test_the_ui_opens_the_experiment_on_its_runs_table(mlflow_server: str, tmp_path: Path) -> None:
    experiment, by_name = _runs(mlflow_server)
    url = f"{mlflow_server}/#/experiments/{experiment['experiment_id']}?workflowType=machine_learning"
    expected = ["Run Name", "Dataset", "demo/train", *sorted(by_name)]
    for attempt in range(3):  # a loaded machine may need another go for the page's scripts to finish
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'profile{attempt}'}", "--dump-dom", url],
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=180,
        ).stdout
        text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S))
        missing = [item for item in expected if item not in text]
        if not missing:
            break
    assert not missing, f"{missing} not on the experiment page"
    assert "Runs - Experiment" in text  # the page opened on the runs table
