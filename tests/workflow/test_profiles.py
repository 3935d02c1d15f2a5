"""Issue 6: the SLURM profile maps the train rule's `gpu` resource to the scheduler (dry run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.workflow.wfutils import copy_workflow, snakemake


@pytest.mark.slow
def test_slurm_profile_dry_run_requests_gpus(tmp_path: Path) -> None:
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", "--profile", "profiles/slurm")
    text = proc.stdout + proc.stderr
    train = text.split("rule train:", 1)[1].split("\n\n", 1)[0]
    resources = re.search(r"resources: (.*)", train).group(1)
    assert "gpu=4" in resources and "slurm_partition=gpu" in resources and "cpus_per_task=16" in resources
