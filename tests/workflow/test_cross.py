"""Issue 7: cross-dataset evaluation (table 3) on the real TotalSegmentator CT and MR, after the tiny run.

The tiny run's models (trained on the demo phantoms) are scored zero-shot on the
``totalseg_example`` volumes fetched through the download stage's mirror. Adding a
cross dataset must not retrain or re-evaluate anything of the training dataset.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from segsam.config import encoder_tag, load_config
from tests.workflow.wfutils import REPO, copy_workflow, planned_jobs, snakemake

SHARED = REPO.parent / "shared" / "data"
# the mirror holds every file: stage_case reads them in place (no fetch_file copy)
CROSS_JOBS = {
    "stage_case": 2,
    "slice_cross_volume": 2,
    "build_cross_index": 1,
    "embed_cross_images": 2,
    "cross_prompts": 1,
    "evaluate_cross": 4,
    "table3": 1,
}


# files later jobs write in place (not replaced by a rename): copied, so the shared run is never edited
IN_PLACE = (".snakemake", "results/mlflow", "results/mlflow.db", "results/logs", "results/benchmarks")


def _copy_run(src: Path, dest: Path) -> Path:
    """A copy of a finished run: outputs hard-linked (later jobs replace them, never edit them), the
    MLflow store, Snakemake's metadata, logs and benchmarks copied (those are written in place)."""

    def link_or_copy(a: str, b: str) -> None:
        relative = Path(a).relative_to(src).as_posix()
        if any(relative == p or relative.startswith(f"{p}/") for p in IN_PLACE):
            shutil.copy2(a, b)
        else:
            os.link(a, b)

    shutil.copytree(src, dest, copy_function=link_or_copy, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def cross_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = _copy_run(tiny_run, tmp_path_factory.mktemp("cross") / "work")
    overlay = "config/cross_test.yaml"
    (work / overlay).write_text(
        yaml.safe_dump(
            {
                "cross": {
                    "datasets": {"totalseg_example": {"mirror": str(SHARED)}},
                    "stride": {"x": 40, "y": 40, "z": 40},
                },
            }
        )
    )
    # only the cross-dataset chain is planned: nothing of the training dataset reruns
    # table 3 joins the default target, and table 5 (rule semantic_tables) takes the cross datasets' rows
    assert planned_jobs(work, overlay) == {**CROSS_JOBS, "semantic_tables": 1, "all": 1}
    snakemake(work, "--cores", "2", overlays=(overlay,))
    return work, overlay


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(
    not (SHARED / "totalsegmentator").is_dir(), reason=f"{SHARED} (real CT/MR) is not beside the repository"
)
def test_cross_dataset_table3(cross_run: tuple[Path, str]) -> None:
    work, overlay = cross_run
    root = work / "results/cross/totalseg_example"
    index = pd.read_parquet(root / "index/masks.parquet")
    assert set(index["case"]) == {"s0001", "s0002"} and set(index["split"]) == {"test"}  # every case is a test case
    # each cross slice encoded once, into the cross dataset's own cache
    caches = list((root / "embeddings").iterdir())
    assert [c.name for c in caches] == [encoder_tag(load_config(REPO / "config/tiny.yaml")["encoder"])]  # LiteMedSAM's
    cached = pd.concat([pd.read_parquet(p) for p in caches[0].glob("*.parquet")])
    assert sorted(cached["image"]) == sorted(index["image"].unique())
    prompts = pd.read_parquet(root / "eval/prompts.parquet")
    assert set(prompts["prompt"]) == {"box"} and len(prompts) == len(index)  # cross.prompts: box

    table = pd.read_csv(work / "results/table3.csv")
    # the methods with a semantic output, in config order: SEG-SAM (box) and the U-Net (no prompt)
    assert list(zip(table["method"], table["prompt"])) == [("segsam", "box"), ("unet", "none")]
    train = pd.read_parquet(work / "results/index/masks.parquet")
    seen = set(train.loc[train["split"] == "train", "class_name"])
    unseen = set(index["class_name"]) - seen
    assert unseen  # TotalSegmentator has classes the phantoms lack (colon, lung, ...)
    for row in table.to_dict(orient="records"):
        assert set(row["unseen_totalseg_example"].split("; ")) == unseen
        assert row["classes_totalseg_example"] == len(set(index["class_name"]) & seen)
        assert 0 <= row["totalseg_example"] <= 100 and 0 <= row["totalseg_example_all"] <= 100
    for method in ("medsam_lite", "ft_decoder", "segsam"):  # every promptable method scores every mask, seen or not
        assert len(pd.read_parquet(root / f"eval/{method}/per_mask.parquet")) == len(index)
    md = (work / "results/table3.md").read_text()
    assert "## Table 3" in md and "| medsam_lite " in md.split("## Binary DSC")[1]
    # the 3D view: one row per (case, class) with axial planes, for each case
    per_case = pd.read_parquet(root / "eval/segsam/per_case.parquet")
    axial = index[index["axis"] == "z"]
    assert set(zip(per_case["case"], per_case["class_id"])) == set(zip(axial["case"], axial["class_id"]))
    assert per_case["dsc_3d"].between(0, 1).all() and (per_case["hd95_3d_mm"] >= 0).all()
    assert "| segsam " in md.split("## 3D per case")[1]
    assert (work / "results/figures/table3.png").stat().st_size > 1000

    # MLflow: one evaluation run per (method, cross dataset), linked to the training run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'results/mlflow.db'}")
    experiment = client.get_experiment_by_name("segsam")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    cross = runs["evaluate/segsam/totalseg_example"]
    assert cross.data.tags["eval_dataset"] == "totalseg_example" and cross.data.tags["dataset"] == "demo"
    assert cross.data.tags["train_run_id"] == runs["train/segsam"].info.run_id
    assert "eval_dataset" not in runs["evaluate/segsam"].data.tags  # the training dataset's own evaluation
    assert "evaluate/unet/totalseg_example" in runs

    assert planned_jobs(work, overlay) == {}  # and a second run has nothing to do


def test_cross_config_plans_kits23_and_btcv_and_asks_for_the_amos_archive_first(tmp_path: Path) -> None:
    """config/cross.yaml (the paper's three datasets), planned without network (dry runs)."""
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", overlays=("config/cross.yaml",), targets=("results/table3.csv",), check=False)
    text = proc.stdout + proc.stderr
    # AMOS lists its cases from its archive: the plan stops, saying how to get it
    assert proc.returncode != 0
    assert "dataset amos: its case list is read from amos/amos22.zip" in text and "cross.datasets.amos.mirror" in text
    assert planned_jobs(work, "config/cross.yaml", targets=("fetch_archives",)) == {
        "fetch_file": 2,
        "fetch_archives": 1,
    }
    # KiTS23 (489 cases, image and label each a download) and BTCV (30 cases in one manual archive)
    (work / "config/kits_btcv.yaml").write_text(yaml.safe_dump({"cross": {"datasets": {"kits23": None, "btcv": None}}}))
    jobs = planned_jobs(work, "config/kits_btcv.yaml", targets=("results/table3.csv",))
    assert jobs["fetch_file"] == 489 * 2 + 1  # no mirror: every KiTS23 file and BTCV's archive are fetched
    assert {rule: jobs[rule] for rule in CROSS_JOBS} == {
        "stage_case": 519,
        "slice_cross_volume": 519,
        "build_cross_index": 2,
        "embed_cross_images": 519,
        "cross_prompts": 2,
        "evaluate_cross": 2 * 4,
        "table3": 1,
    }
    assert jobs["extract_archive"] == 1 and jobs["train"] == 3  # the tiny training chain (3 methods) comes first
