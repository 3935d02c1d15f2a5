"""Issue 18: the whole chain on real CHAOS MR (config/chaos_tiny.yaml), and reruns by content.

Three real CHAOS T2-SPIR cases, read in place from a copy of ``../shared/data``
(the copy may be edited): staged once (sha256-checked), sliced, indexed, split
by case, embedded, trained, evaluated, tabulated. A pipeline check, not scores.
Then a touched mirror file reruns nothing, and an edited one plans exactly its
case's chain and what follows, and fails its checksum naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from segsam.config import load_config
from tests.workflow.wfutils import REPO, copy_workflow, planned_jobs, snakemake

SHARED = REPO.parent / "shared" / "data"
CONFIG = "config/chaos_tiny.yaml"
CASES = {"chaos_15": 15, "chaos_20": 20, "chaos_39": 39}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not (SHARED / "chaos_t2").is_dir(), reason=f"{SHARED / 'chaos_t2'} is not beside the repository"
    ),
]


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chaos_tiny run, with a mirror holding copies of its three cases' files."""
    work = tmp_path_factory.mktemp("chaos") / "work"
    work.mkdir()
    copy_workflow(work)
    mirror = work.parent / "mirror" / "chaos_t2"
    mirror.mkdir(parents=True)
    for number in CASES.values():
        for kind in ("image", "label"):
            shutil.copy2(SHARED / "chaos_t2" / f"{kind}_{number}.nii.gz", mirror / f"{kind}_{number}.nii.gz")
    (work / "config" / "mirror.yaml").write_text(yaml.safe_dump({"dataset": {"mirror": str(mirror.parent)}}))
    snakemake(work, "--cores", "2", "--configfile", CONFIG, "config/mirror.yaml", overlays_only=True)
    return work


def _plan(work: Path) -> dict[str, int]:
    return planned_jobs(work, CONFIG, "config/mirror.yaml", overlays_only=True)


def test_chaos_tiny_runs_the_whole_chain(chaos_run: Path) -> None:
    work = chaos_run
    config = load_config(REPO / CONFIG)
    summary = json.loads((work / "results/index/summary.json").read_text())
    assert summary["skipped"] == {} and summary["n_cases"] == 3
    # a seeded case-level split: one test case, two training cases, never a case on both sides
    assert len(summary["splits"]["test"]["cases"]) == 1 and len(summary["splits"]["train"]["cases"]) == 2
    masks = pd.read_parquet(work / "results/index/masks.parquet")
    assert set(masks["case"]) == set(CASES) and masks.groupby("case")["split"].nunique().max() == 1
    assert set(masks["class_name"]) == {"liver", "kidney_right", "kidney_left", "spleen"}
    assert set(masks["modality"]) == {"mr"} and (masks["source_case"] == masks["case"]).all()
    assert sorted(p.name for p in (work / "results/raw/chaos_t2").iterdir()) == sorted(
        f"{case}_{role}.nii.gz" for case in CASES for role in ("image", "label")
    )
    assert not (work / "results/downloads").exists()  # read in place: one staged copy
    table = pd.read_csv(work / "results/table1.csv")
    assert set(table["method"]) == set(config["methods"]) and table["mr"].between(0, 100).all()
    for name in ("table2.csv", "figures/table1.png", "figures/training_curves.png", "text/class_embeddings.parquet"):
        assert (work / "results" / name).is_file(), name


def test_touching_a_mirror_file_reruns_nothing(chaos_run: Path) -> None:
    label = chaos_run.parent / "mirror" / "chaos_t2" / "label_20.nii.gz"
    os.utime(label)  # newer than every output, the same content
    assert _plan(chaos_run) == {}


def test_an_edited_label_reruns_its_case_and_what_follows_and_fails_its_checksum(chaos_run: Path) -> None:
    label = chaos_run.parent / "mirror" / "chaos_t2" / "label_20.nii.gz"
    volume = sitk.ReadImage(str(label))
    edited = sitk.Cast(sitk.Mask(volume, sitk.NotEqual(volume, 4)), volume.GetPixelID())  # spleen unlabelled
    sitk.WriteImage(edited, str(label), useCompression=True)
    jobs = _plan(chaos_run)
    # exactly chaos_20's chain: its staging, slicing and embeddings, then the index and what follows
    assert {rule: jobs.get(rule) for rule in ("stage_case", "slice_volume", "embed_images", "build_index")} == {
        "stage_case": 1,
        "slice_volume": 1,
        "embed_images": 1,
        "build_index": 1,
    }
    assert jobs["train"] == 2 and jobs["evaluate"] == 3 and "embed_text" not in jobs and "describe_classes" not in jobs
    proc = snakemake(
        chaos_run,
        "--cores",
        "1",
        "--configfile",
        CONFIG,
        "config/mirror.yaml",
        targets=("results/raw/chaos_t2/chaos_20_label.nii.gz",),
        overlays_only=True,
        check=False,
    )
    assert proc.returncode != 0
    assert f"{label}: sha256 mismatch" in proc.stdout + proc.stderr
    assert not (chaos_run / "results/raw/chaos_t2/chaos_20_label.nii.gz").exists()
