"""Rule predict: one job per scan of predict.input, and only new or changed scans rerun (dry runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_volume
from tests.predict.conftest import ct_phantom
from tests.workflow.wfutils import copy_workflow, planned_jobs, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow with a folder of two scans (a NIfTI file, and a copy of it) and their prompts."""
    work = copy_workflow(tmp_path_factory.mktemp("wf"))
    scans, prompts = work / "scans", work / "prompts"
    write_volume(scans / "a.nii.gz", ct_phantom(), spacing=(1.0, 1.0, 3.0))
    shutil.copy(scans / "a.nii.gz", scans / "b.nii.gz")
    prompts.mkdir()
    for name in ("a", "b"):
        (prompts / f"{name}.json").write_text('{"frame": "voxel", "prompts": [{"class": 1, "point": [5, 5, 1]}]}')
    overlay = {"predict": {"input": "scans", "method": "medsam_lite", "prompts": "prompts"}}
    (work / "config" / "predict.yaml").write_text(yaml.safe_dump(overlay))
    return work


def test_the_default_plans_no_prediction(workdir: Path) -> None:
    assert "predict" not in planned_jobs(workdir, targets=("predict_all",))


def test_one_predict_job_per_scan_and_only_changed_scans_rerun(workdir: Path) -> None:
    overlay = "config/predict.yaml"
    assert planned_jobs(workdir, "--configfile", overlay, targets=("predict_all",)) == {"predict": 2, "predict_all": 1}
    outputs = workdir / "results" / "predict"
    outputs.mkdir(parents=True)
    for name in ("a", "b"):
        for suffix in (".nii.gz", ".json"):
            (outputs / f"{name}{suffix}").write_text("done")
    assert "predict" not in planned_jobs(workdir, "--configfile", overlay, targets=("predict_all",))
    newer = (outputs / "a.json").stat().st_mtime + 10
    os.utime(workdir / "scans" / "b.nii.gz", (newer, newer))
    assert planned_jobs(workdir, "--configfile", overlay, targets=("predict_all",)) == {"predict": 1, "predict_all": 1}


def test_a_promptable_method_without_prompts_stops_at_start_up(workdir: Path) -> None:
    overlay = workdir / "config" / "no_prompts.yaml"
    overlay.write_text(yaml.safe_dump({"predict": {"input": "scans", "method": "medsam_lite"}}))
    proc = snakemake(workdir, "-n", "predict_all", overlays=("--configfile", "config/no_prompts.yaml"), check=False)
    assert proc.returncode != 0 and "config key predict.prompts" in proc.stdout + proc.stderr
