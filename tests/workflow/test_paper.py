"""Issue 22: the paper's own run (config/paper.yaml) on an SA-Med2D-16M-style release, and a 2D release end to end.

* config/paper.yaml is planned (``snakemake -n``) against a small SA-Med2D-style mirror: the release is
  imported (no slicing, no embedding: the cache is off), every method of tables 1, 2 and 5 trains on
  4 GPUs (``gpu=4``, 128 images a step), and nothing else is missing.
* A trimmed 2D-release config runs the whole chain for real, streaming the slices from the release
  (``cache.enabled: false``): import, train, evaluate, table 1.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import write_sa_med2d_release
from tests.workflow.wfutils import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow

CASES = {f"Case_{i:03d}": "ct_00" for i in range(2)} | {f"Pat{i}": "mr_t2" for i in range(2)}


def _mirror(work: Path) -> Path:
    """An SA-Med2D-16M-style release under ``<work>/../mirror`` and an overlay pointing dataset.mirror at it."""
    mirror = work.parent / "mirror"
    write_sa_med2d_release(mirror / "sa_med2d_16m" / "SAMed2Dv1", CASES, slices=(3, 7), shape=(64, 64))
    (work / "config" / "mirror.yaml").write_text(yaml.safe_dump({"dataset": {"mirror": str(mirror)}}))
    return mirror


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    work = root / "work"
    work.mkdir()
    copy_workflow(work)
    _mirror(work)
    return work


def test_the_paper_config_plans_four_gpu_training_from_the_release(work: Path) -> None:
    # table 1 and every method's evaluation (tables 2, 4 and 5 also wait for the cross datasets: AMOS
    # lists its cases from its archive, fetched first by `snakemake fetch_archives`)
    paper = yaml.safe_load((work / "config" / "paper.yaml").read_text())
    targets = ("results/table1.csv", *(f"results/eval/{m}/per_mask.parquet" for m in paper["methods"]))
    jobs = planned_jobs(work, "config/paper.yaml", "config/mirror.yaml", targets=targets, overlays_only=True)
    trained = [m for m in paper["methods"] if m not in ("sam",)]
    assert jobs["import_release"] == 1 and jobs["fetch_vit_b"] == 1
    assert jobs["train"] == len(trained) and jobs["evaluate"] == len(paper["methods"])
    assert not {"slice_volume", "build_index", "embed_images"} & set(jobs)
    proc = snakemake(
        work, "-n", "-p", "--configfile", "config/paper.yaml", "config/mirror.yaml", targets=targets, overlays_only=True
    )
    train_jobs = re.findall(r"rule train:.*?resources: ([^\n]*)", proc.stdout, flags=re.S)
    assert len(train_jobs) == len(trained) and all("gpu=4" in r for r in train_jobs), train_jobs[:2]


def test_the_paper_config_refuses_a_cache_of_the_release(work: Path) -> None:
    (work / "config" / "cached.yaml").write_text(yaml.safe_dump({"cache": {"enabled": True}}))
    proc = snakemake(
        work,
        "-n",
        "--configfile",
        "config/paper.yaml",
        "config/mirror.yaml",
        "config/cached.yaml",
        targets=("results/table1.csv",),
        overlays_only=True,
        check=False,
    )
    assert proc.returncode != 0 and "set cache.enabled: false" in proc.stdout + proc.stderr


def test_a_missing_release_names_where_it_should_be(work: Path) -> None:
    (work / "config" / "nowhere.yaml").write_text(yaml.safe_dump({"dataset": {"mirror": str(work / "nowhere")}}))
    proc = snakemake(
        work,
        "-n",
        "--configfile",
        "config/paper.yaml",
        "config/nowhere.yaml",
        targets=("results/table1.csv",),
        overlays_only=True,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "nowhere/sa_med2d_16m/SAMed2Dv1" in text and "zip -s 0" in text


def test_a_2d_release_runs_the_chain_streaming_its_slices(work: Path) -> None:
    overlay = {
        "run_name": "release_tiny",
        "dataset": {"name": "sa_med2d_16m"},
        "cache": {"enabled": False},
        "split": {"test_fraction": 0.25},  # one case of each modality
        "methods": ["ft_decoder"],
        "train": {
            "epochs": 1,
            "batch_size": 4,
            "micro_batch": 2,
            "masks_per_image": 2,
            "lr_milestones": [],
            "workers": 1,
        },
        "evaluate": {"bootstrap": 100},
    }
    (work / "config" / "release_tiny.yaml").write_text(yaml.safe_dump(overlay))
    snakemake(
        work,
        "--cores",
        "2",
        "--configfile",
        "config/release_tiny.yaml",
        "config/mirror.yaml",
        targets=("results/table1.csv",),
        overlays_only=True,
    )
    masks = pd.read_parquet(work / "results" / "index" / "masks.parquet")
    assert set(masks["case"]) == set(CASES) and masks.groupby("case")["split"].nunique().max() == 1
    assert not (work / "results" / "embeddings").exists() and not (work / "results" / "slices").exists()
    table = pd.read_csv(work / "results" / "table1.csv")
    assert list(table["method"].unique()) == ["ft_decoder"] and table["avg"].notna().all(), table
    log = (work / "results" / "logs" / "train" / "ft_decoder.log").read_text()
    assert "epoch 1" in log
