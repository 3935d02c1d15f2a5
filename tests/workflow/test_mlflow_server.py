"""Issue 7: the real `mlflow server` on the workflow's sqlite store serves its runs over the REST API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_mlflow_server_lists_the_workflow_runs(tiny_run: Path, tmp_path: Path) -> None:
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow_bin),
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
        cwd=tmp_path,
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
        experiment = json.loads(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=segsam", timeout=10
            ).read()
        )
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 100})[
            "runs"
        ]
        names = {run["info"]["run_name"] for run in runs}
        assert {"train/ft_decoder", "evaluate/medsam_lite", "evaluate/ft_decoder"} <= names
        by_name = {run["info"]["run_name"]: run for run in runs}
        tags = {t["key"]: t["value"] for t in by_name["evaluate/ft_decoder"]["data"]["tags"]}
        assert tags["train_run_id"] == by_name["train/ft_decoder"]["info"]["run_id"]
        metrics = {m["key"] for m in by_name["evaluate/ft_decoder"]["data"]["metrics"]}
        assert "dsc/box/avg" in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
