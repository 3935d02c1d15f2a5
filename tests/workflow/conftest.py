"""The workflow run once on config/tiny.yaml, shared by the workflow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow.wfutils import copy_workflow, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workdir after a complete run of the tiny config (shared by the workflow tests)."""
    work = copy_workflow(tmp_path_factory.mktemp("tiny"))
    snakemake(work, "--cores", "2")
    return work
