"""The data stage for real, on ../shared/data: mirror download -> staging -> slicing -> index.

Runs the ``totalseg_example`` dataset (one real CT, one real MR, TotalSegmentator
labels) through the same functions the workflow's rules call, with the
``real-small`` configuration, then once through Snakemake itself (up to the index).
Skipped, with the reason, where ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from segsam.config import load_config
from segsam.data.download import fetch_file, sha256_of, stage_case
from segsam.data.index import build_index
from segsam.data.registry import load_registry
from segsam.data.slicing import SUMMARY, slice_case
from segsam.data.vocabulary import Vocabulary
from tests.workflow.wfutils import copy_workflow

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

REPO = Path(__file__).resolve().parents[2]
REAL_SMALL = REPO / "config" / "real-small.yaml"
ABDOMEN = {"liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta", "inferior_vena_cava", "vertebrae"}


@pytest.fixture(scope="module")
def real_small() -> dict[str, Any]:
    return load_config(REAL_SMALL)


@pytest.fixture(scope="module")
def staged(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Fetch the four files through the mirror (checksummed) and stage both cases."""
    root = tmp_path_factory.mktemp("real")
    spec = load_registry().get("totalseg_example")
    cases = spec.cases()
    for path, file in spec.all_files(cases).items():
        dest = fetch_file(file, root / "downloads" / path, mirror=shared_data, progress=False)
        assert sha256_of(dest) == file.sha256
    for case, case_spec in cases.items():
        stage_case(
            {
                "image": str(root / "downloads" / case_spec.image.file.path),
                "label": str(root / "downloads" / case_spec.label.file.path),
            },
            {"image": None, "label": None},
            {"image": str(root / "raw" / f"{case}_image.nii.gz"), "label": str(root / "raw" / f"{case}_label.nii.gz")},
        )
    return root, cases


@pytest.fixture(scope="module")
def index(
    staged: tuple[Path, dict[str, Any]], real_small: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    root, cases = staged
    folders = []
    for case, spec in cases.items():
        folder = root / "slices" / case
        slice_case(
            root / "raw" / f"{case}_image.nii.gz",
            root / "raw" / f"{case}_label.nii.gz",
            folder,
            case=case,
            modality=spec.modality,
            dataset="totalseg_example",
            vocabulary_csv=REPO / real_small["vocabulary"],
            labelmap_json=REPO / spec.labelmap,
            slicing=real_small["slicing"],
        )
        folders.append(folder)
    split = real_small["split"]
    masks, images = build_index(
        folders,
        root / "index" / "masks.parquet",
        root / "index" / "images.parquet",
        test_fraction=split["test_fraction"],
        seed=split["seed"],
        assign=split["assign"],
        summary_out=root / "index" / "summary.json",
    )
    return masks, images, json.loads((root / "index" / "summary.json").read_text())


def test_both_real_cases_are_sliced_with_their_label_maps(index, staged) -> None:
    masks, images, summary = index
    assert set(masks["case"]) == {"s0001", "s0002"} and summary["skipped"] == {}
    assert dict(masks.drop_duplicates("case").set_index("case")["modality"]) == {"s0001": "ct", "s0002": "mr"}
    ct_classes = set(masks.loc[masks["case"] == "s0001", "class_name"])
    mr_classes = set(masks.loc[masks["case"] == "s0002", "class_name"])
    assert ABDOMEN <= ct_classes
    assert {"liver", "spleen", "kidney_left", "kidney_right"} <= mr_classes
    vocab = Vocabulary.read(REPO / "config" / "vocabulary.csv")
    assert set(masks["class_id"]) <= set(vocab.ids)
    assert (masks["area_fraction"] >= 0.00153).all()
    for case in ("s0001", "s0002"):
        assert json.loads((staged[0] / "slices" / case / SUMMARY).read_text())["n_masks"] == int(
            (masks["case"] == case).sum()
        )


def test_real_small_slice_budget(index) -> None:
    masks, images, _ = index
    per_case = images.groupby("case").size()
    assert 20 <= per_case["s0001"] <= 66 and 5 <= per_case["s0002"] <= 41  # strides x6 y6 z4
    assert len(images) <= 200 and len(masks) <= 1500  # "a few hundred slices at most"
    assert set(images["axis"]) == {"x", "y", "z"}


def test_real_small_split_has_a_test_case_and_no_leak(index) -> None:
    masks, images, summary = index
    assert masks.groupby("case")["split"].nunique().max() == 1
    assert images.groupby("case")["split"].nunique().max() == 1
    assert summary["splits"]["test"]["cases"] == ["s0001"] and summary["splits"]["train"]["cases"] == ["s0002"]
    assert not set(masks.loc[masks["split"] == "test", "image"]) & set(masks.loc[masks["split"] == "train", "image"])


def test_mirror_copy_is_not_the_mirror(staged, shared_data: Path) -> None:
    root, _ = staged
    copy = root / "downloads" / "totalsegmentator" / "example_ct.nii.gz"
    original = shared_data / "totalsegmentator" / "example_ct.nii.gz"
    assert copy.read_bytes() == original.read_bytes()
    assert sorted(p.name for p in copy.parent.iterdir() if p.name.endswith(".part")) == []


def test_snakemake_runs_the_data_stage_on_real_small(shared_data: Path, tmp_path: Path) -> None:
    """The rules themselves: stage_case x2 (the mirror's files read in place) -> slice_volume x2 -> build_index."""
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    overlay = work / "mirror.yaml"
    overlay.write_text(yaml.safe_dump({"dataset": {"mirror": str(shared_data)}}), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "results/index/masks.parquet",
        "--configfile",
        "config/real-small.yaml",
        str(overlay),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    dry = subprocess.run(
        [*cmd, "-n"], cwd=work, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=env
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    for rule, count in (("stage_case", 2), ("slice_volume", 2), ("build_index", 1)):
        assert any(line.split() == [rule, str(count)] for line in dry.stdout.splitlines()), dry.stdout
    assert "fetch_file" not in dry.stdout  # one staged copy: nothing is copied into results/downloads
    proc = subprocess.run(cmd, cwd=work, capture_output=True, encoding="utf-8", errors="replace", timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((work / "results" / "index" / "summary.json").read_text())
    assert summary["splits"]["test"]["cases"] == ["s0001"] and summary["skipped"] == {}
    raw = work / "results" / "raw" / "totalseg_example"
    assert sorted(p.name for p in raw.iterdir()) == [
        "s0001_image.nii.gz",
        "s0001_label.nii.gz",
        "s0002_image.nii.gz",
        "s0002_label.nii.gz",
    ]
    again = subprocess.run(
        [*cmd, "-n"], cwd=work, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=env
    )
    assert "Nothing to be done" in again.stdout + again.stderr
