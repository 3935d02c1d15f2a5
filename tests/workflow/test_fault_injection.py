"""Recovery after a crash: SIGKILL the slicing, embedding and training jobs at random points, rerun, compare.

A seeded loop of trials. Each trial deletes one output of the tiny run, asks
Snakemake for it, kills the job's process (not Snakemake) at a random moment
of its expected duration, then reruns the same target as a user would. The
rerun must finish with outputs identical to an uninterrupted run (byte for
byte; a training checkpoint tensor for tensor, through its resume state) and
no temporary file may be left anywhere under ``results/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from segsam.models.weights import load_state_dict
from tests.workflow.wfutils import snakemake

pytestmark = pytest.mark.slow

#: Four seeded kills in the test suite; ``SEGSAM_FAULT_TRIALS=21`` for the longer soak (docs/testing.md).
TRIALS = int(os.environ.get("SEGSAM_FAULT_TRIALS", "4"))
OVERLAY = "config/faults.yaml"
#: Temporaries of segsam.atomic (files and folders), download parts, Snakemake's own shadow copies.
TEMPORARY = re.compile(r"(^\..+\.\d+\..*\.tmp|\.tmp-\d+$|\.part$|^\.examples\.tmp$)")


@dataclass(frozen=True)
class Stage:
    """One kind of job the trials kill: its rule, its target and the script its process runs."""

    rule: str
    target: str
    script: str
    benchmark: str

    def seconds(self, work: Path) -> float:
        """How long the job's own process ran last time (Snakemake's benchmark file)."""
        lines = (work / self.benchmark).read_text(encoding="utf-8").splitlines()
        return float(dict(zip(lines[0].split("\t"), lines[-1].split("\t")))["s"])

    def remove(self, work: Path) -> None:
        path = work / self.target
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _stages(work: Path) -> list[Stage]:
    case = sorted(p.name for p in (work / "results/slices").iterdir() if not p.name.startswith("."))[0]
    (encoder,) = [p.name for p in (work / "results/embeddings").iterdir() if p.is_dir()]
    return [
        Stage(
            "slice_volume", f"results/slices/{case}", "slice_volume.py", f"results/benchmarks/slice_volume/{case}.tsv"
        ),
        Stage(
            "embed_images",
            f"results/embeddings/{encoder}/{case}.npy",
            "embed_images.py",
            f"results/benchmarks/embed_images/{encoder}/{case}.tsv",
        ),
        Stage(
            "train", "results/models/ft_decoder/checkpoint.pt", "train.py", "results/benchmarks/train/ft_decoder.tsv"
        ),
    ]


def _job_process(root: psutil.Process, script: str) -> psutil.Process | None:
    for child in root.children(recursive=True):
        try:
            if child.name().startswith("python") and any(script in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def _run_and_kill(work: Path, stage: Stage, delay: float) -> bool:
    """Ask Snakemake for the target and SIGKILL the job's process ``delay`` seconds after it starts.

    Returns:
        Whether the job was killed (False: it finished first).
    """
    cmd = [sys.executable, "-m", "snakemake", stage.target, "--cores", "2"]
    cmd += ["--configfile", "config/tiny.yaml", OVERLAY]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, started = False, None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        job = _job_process(psutil.Process(proc.pid), stage.script)
        if job is not None and started is None:
            started = time.monotonic()
        if job is not None and time.monotonic() - started >= delay:
            os.kill(job.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait(timeout=300)
    return killed


def _snapshot(work: Path, stage: Stage) -> dict[str, bytes] | dict[str, torch.Tensor]:
    path = work / stage.target
    if stage.rule == "train":
        return load_state_dict(path)
    files = sorted(path.rglob("*")) if path.is_dir() else [path, path.with_suffix(".parquet")]
    return {str(f.relative_to(work)): f.read_bytes() for f in files if f.is_file()}


def _same(reference: dict, result: dict) -> bool:
    if reference.keys() != result.keys():
        return False
    return all(
        torch.equal(value, result[key]) if isinstance(value, torch.Tensor) else value == result[key]
        for key, value in reference.items()
    )


def _temporaries(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in (work / "results").rglob("*") if TEMPORARY.search(p.name))


def test_killed_jobs_recover_to_identical_outputs(tiny_run: Path, tmp_path: Path) -> None:
    work = tmp_path / "faults"
    shutil.copytree(tiny_run, work, symlinks=True)
    # training writes its resume state every step, so most kills land after a snapshot
    (work / OVERLAY).write_text(yaml.safe_dump({"train": {"checkpoint_every": 1}}))
    stages = _stages(work)
    reference, duration = {}, {}
    for stage in stages:  # an uninterrupted run of each job under the same settings
        stage.remove(work)
        snakemake(work, "--cores", "2", overlays=(OVERLAY,), targets=(stage.target,))
        duration[stage.rule] = stage.seconds(work)
        reference[stage.rule] = _snapshot(work, stage)
    rng = np.random.default_rng(2026)
    outcomes = []
    for trial in range(TRIALS):
        stage = stages[trial % len(stages)]
        delay = float(rng.uniform(0.0, 0.8 * duration[stage.rule]))
        stage.remove(work)
        killed = _run_and_kill(work, stage, delay)
        snakemake(work, "--cores", "2", overlays=(OVERLAY,), targets=(stage.target,))
        outcomes.append((stage.rule, round(delay, 2), killed))
        assert _same(reference[stage.rule], _snapshot(work, stage)), f"trial {trial}: {outcomes[-1]}"
        assert _temporaries(work) == [], f"trial {trial}: {outcomes[-1]}"
    assert sum(killed for _, _, killed in outcomes) >= TRIALS * 2 // 3, outcomes  # most trials did interrupt
    assert not (work / "results/models/ft_decoder/state/resume.pt").exists()
