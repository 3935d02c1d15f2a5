"""Issue 18: a folder of your own through Snakemake (dataset `local`), up to the index.

Two real CHAOS MR cases in the `local` layout, one under a case id with a
hyphen, a space and an accent, beside a stray file: the start-up warning names
the stray file, the index keeps the original id. Reruns go by content: an
edited label re-stages exactly its case (and reslices it and rebuilds the
index), a touched file reruns nothing. dataset.resample_labels reaches the
slicing jobs, and a class added without a description stops at start-up.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from segsam.data.layouts import safe_case_id
from tests.workflow.wfutils import REPO, copy_workflow, planned_jobs, snakemake

SHARED = REPO.parent / "shared" / "data"
INDEX = ("results/index/masks.parquet",)
ODD_ID = "patient-15 ü"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not (SHARED / "chaos_t2").is_dir(), reason=f"{SHARED / 'chaos_t2'} is not beside the repository"
    ),
]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(workdir, your folder) after the run up to the index."""
    work = tmp_path_factory.mktemp("own") / "work"
    work.mkdir()
    copy_workflow(work)
    mine = work.parent / "mine"
    (mine / "mr").mkdir(parents=True)
    for case, number in ((ODD_ID, 15), ("p20", 20)):
        for kind in ("image", "label"):
            shutil.copy2(SHARED / "chaos_t2" / f"{kind}_{number}.nii.gz", mine / "mr" / f"{case}_{kind}.nii.gz")
    (mine / "notes.txt").write_text("scanner protocol", encoding="utf-8")
    overlay = {
        "dataset": {"name": "local", "mirror": str(mine), "labelmap": "config/labelmaps/chaos.json"},
        "slicing": {"stride": {"x": 128, "y": 128, "z": 32}},
        "split": {"test_fraction": 0.5},
    }
    (work / "config" / "own.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
    proc = snakemake(work, "--cores", "2", *_own(), targets=INDEX, overlays_only=True)
    assert "1 file(s) under" in proc.stderr and "notes.txt" in proc.stderr  # the one start-up warning
    return work, mine


def _own(*overlays: str) -> tuple[str, ...]:
    """``--configfile`` arguments: the default config, the test's overlay, then ``overlays``."""
    return ("--configfile", "config/own.yaml", *overlays)


def _planned(work: Path, *overlays: str) -> dict[str, int]:
    """Rules (and job counts) a dry run up to the index would execute; {} when nothing is to be done."""
    return planned_jobs(work, "config/own.yaml", *overlays, targets=INDEX, overlays_only=True)


def test_the_index_keeps_the_original_case_id(own_run: tuple[Path, Path]) -> None:
    work, _ = own_run
    masks = pd.read_parquet(work / "results/index/masks.parquet")
    ids = dict(zip(masks["case"], masks["source_case"]))
    assert ids == {safe_case_id(ODD_ID): ODD_ID, "p20": "p20"}
    odd = masks[masks["source_case"] == ODD_ID]
    assert len(odd) and all(Path(p).name.startswith(f"mr--local--{safe_case_id(ODD_ID)}--") for p in odd["image"])
    assert not (work / "results/downloads").exists()


def test_reruns_follow_the_content_of_your_files(own_run: tuple[Path, Path]) -> None:
    work, mine = own_run
    label = mine / "mr" / "p20_label.nii.gz"
    os.utime(label)
    assert _planned(work) == {}
    volume = sitk.ReadImage(str(label))
    sitk.WriteImage(sitk.Cast(sitk.Mask(volume, sitk.NotEqual(volume, 4)), volume.GetPixelID()), str(label), True)
    assert _planned(work) == {"stage_case": 1, "slice_volume": 1, "build_index": 1}
    snakemake(work, "--cores", "2", *_own(), targets=INDEX, overlays_only=True)
    assert _planned(work) == {}
    # dataset.resample_labels reaches every slicing job (a param), nothing is re-staged
    (work / "config" / "resample.yaml").write_text(yaml.safe_dump({"dataset": {"resample_labels": True}}))
    assert _planned(work, "config/resample.yaml") == {"slice_volume": 2, "build_index": 1}


def test_a_class_without_a_description_stops_at_start_up(own_run: tuple[Path, Path]) -> None:
    work, _ = own_run
    before = sorted(p.relative_to(work) for p in (work / "results").rglob("*"))
    (work / "config" / "extra.yaml").write_text(yaml.safe_dump({"vocabulary_extra": {"brain_oedema": 31}}))
    proc = snakemake(work, "-n", *_own("config/extra.yaml"), targets=INDEX, overlays_only=True, check=False)
    assert proc.returncode != 0
    line = next(line for line in (proc.stdout + proc.stderr).splitlines() if "brain_oedema" in line)
    assert "no description" in line and "text.descriptions_file" in line and "text.llm.enabled" in line
    assert sorted(p.relative_to(work) for p in (work / "results").rglob("*")) == before
