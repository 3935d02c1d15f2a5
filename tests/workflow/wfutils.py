"""Helpers to run a copy of the workflow (Snakefile, rules, config, segsam) with Snakemake.

The copy carries its own ``segsam/`` so that tests may edit code there to prove
that Snakemake reruns exactly the stages using it (the Snakefile puts its own
folder first on ``sys.path`` and ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COPIED = ("Snakefile", "workflow", "config", "envs", "segsam", "profiles")


def snakemake(
    workdir: Path,
    *args: str,
    overlays: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = 1800,
    overlays_only: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake (this interpreter's) in ``workdir`` on the tiny config (+ ``overlays``).

    Targets go first: ``--configfile`` and other list options would swallow them. With
    ``overlays_only`` the caller passes its own ``--configfile`` in ``args`` (no tiny config).
    """
    configs = [] if overlays_only else ["--configfile", "config/tiny.yaml", *overlays]
    cmd = [sys.executable, "-m", "snakemake", *targets, *args, *configs]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def planned_jobs(
    workdir: Path, *overlays: str, targets: tuple[str, ...] = (), overlays_only: bool = False
) -> dict[str, int]:
    """Rules (and job counts) a dry run (of ``targets``, else the default) would execute.

    {} when nothing is to be done. With ``overlays_only`` the config is the default
    one and ``overlays`` (no tiny config).
    """
    if overlays_only:
        proc = snakemake(workdir, "-n", "--configfile", *overlays, targets=targets, overlays_only=True)
    else:
        proc = snakemake(workdir, "-n", overlays=overlays, targets=targets)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M):
        if name != "total":
            jobs[name] = int(count)
    return jobs


def copy_workflow(dest: Path) -> Path:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest
