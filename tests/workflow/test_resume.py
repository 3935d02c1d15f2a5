"""Issue 6: SIGKILL the training process mid-epoch, rerun the Snakemake target, get the uninterrupted weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from segsam.models.weights import load_state_dict
from segsam.train.checkpoint import STATE_FILE
from tests.workflow.wfutils import snakemake

pytestmark = pytest.mark.slow

TARGET = "results/models/ft_decoder/checkpoint.pt"
SUMMARY = "results/models/ft_decoder/train_summary.json"


def _train_process(root: psutil.Process) -> psutil.Process | None:
    for child in root.children(recursive=True):
        try:
            if any("train.py" in part for part in child.cmdline()) and child.name().startswith("python"):
                return child
        except psutil.Error:
            continue
    return None


def test_sigkill_mid_epoch_then_rerun_resumes_exactly(tiny_run: Path, tmp_path: Path) -> None:
    work = tmp_path / "resume"
    shutil.copytree(tiny_run, work, symlinks=True)
    overlay = work / "config" / "resume.yaml"
    overlay.write_text(yaml.safe_dump({"train": {"epochs": 2, "checkpoint_every": 2}}))
    overlays = ("config/resume.yaml",)

    snakemake(work, "--cores", "2", overlays=overlays, targets=(TARGET,))
    uninterrupted = load_state_dict(work / TARGET)
    history = json.loads((work / SUMMARY).read_text())["history"]
    state_file = work / "results/models/ft_decoder/state" / STATE_FILE
    assert not state_file.exists()

    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        TARGET,
        "--cores",
        "2",
        "--forcerun",
        "train",
        "--configfile",
        "config/tiny.yaml",
        *overlays,
    ]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    killed = False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if state_file.exists():
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            if state["epoch"] == 1 and 0 < state["step_in_epoch"]:  # mid-way through the second epoch
                trainer = _train_process(psutil.Process(proc.pid))
                if trainer is not None:
                    os.kill(trainer.pid, signal.SIGKILL)
                    killed = True
                    break
        time.sleep(0.05)
    proc.wait(timeout=120)
    assert killed, "training finished before it could be interrupted"
    assert proc.returncode != 0
    assert not (work / TARGET).exists()
    assert state_file.exists()

    snakemake(work, "--cores", "2", overlays=overlays, targets=(TARGET,))
    assert "resuming from" in (work / "results/logs/train/ft_decoder.log").read_text()
    resumed = load_state_dict(work / TARGET)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key
    assert not state_file.exists()
    # the interrupted epoch's logged means cover all its steps, those before the kill included
    resumed_history = json.loads((work / SUMMARY).read_text())["history"]
    for before, after in zip(history, resumed_history, strict=True):
        assert before.keys() == after.keys()
        for term in set(before) - {"images_per_s"}:  # every loss term, the lr and the epoch
            assert after[term] == pytest.approx(before[term], rel=1e-9, abs=1e-12), term
