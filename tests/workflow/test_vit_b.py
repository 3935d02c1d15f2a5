"""The SAM ViT-B baselines through the workflow, on the tiny config with a random ViT-B checkpoint.

No real ViT-B weights are reachable here (docs/status.md#not-yet): a randomly initialised SAM ViT-B in the
official key layout (``segsam.models.stand_in``) stands in for
``sam_vit_b_01ec64.pth``. Rule ``fetch_vit_b`` takes it from ``encoder.vit_b.mirror`` and checks
its sha256; ``sam`` and ``ft_sam+sawd`` train and are scored from a ViT-B embedding cache, and
Med-SA (with and without SAWD) trains its adapters from the slices' images. The numbers are
those of random weights: the tests check the plumbing, not the accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from segsam.models.adapters import is_adapter_parameter
from segsam.models.weights import load_state_dict, sha256_of
from tests.workflow.wfutils import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slow

METHODS = ["sam", "ft_sam+sawd", "med_sa", "med_sa+sawd"]


def _overlay(work: Path, name: str, content: dict) -> str:
    (work / "config" / name).write_text(yaml.safe_dump(content))
    return f"config/{name}"


@pytest.fixture(scope="module")
def vit_b_run(tmp_path_factory: pytest.TempPathFactory, random_vit_b: tuple[Path, str]) -> tuple[Path, str, str]:
    """(workdir, overlay, sha256) after the ViT-B methods ran on the tiny config."""
    work = copy_workflow(tmp_path_factory.mktemp("vit_b"))
    mirror = work / "mirror"
    mirror.mkdir()
    os.link(random_vit_b[0], mirror / "sam_vit_b_01ec64.pth")
    config = _overlay(
        work,
        "vit_b_test.yaml",
        {
            "methods": METHODS,
            "encoder": {"vit_b": {"sha256": random_vit_b[1], "mirror": str(mirror)}},
        },
    )
    snakemake(work, "--cores", "2", overlays=(config,))  # the default target: tables, figures, text
    return work, config, random_vit_b[1]


def test_weights_are_fetched_and_checked(vit_b_run: tuple[Path, str, str]) -> None:
    work, _, sha = vit_b_run
    assert sha256_of(work / "results/weights/sam_vit_b_01ec64.pth") == sha


def test_one_vit_b_cache_shared_by_the_frozen_encoder_methods(vit_b_run: tuple[Path, str, str]) -> None:
    work, _, sha = vit_b_run
    caches = sorted(p.name for p in (work / "results/embeddings").iterdir())
    assert caches == [f"sam_vit_b_01ec64-{sha[:8]}"]  # no LiteMedSAM cache: no tiny_vit method is listed
    images = pd.read_parquet(work / "results/index/images.parquet")["image"]
    cached = pd.concat([pd.read_parquet(p) for p in (work / "results/embeddings" / caches[0]).glob("*.parquet")])[
        "image"
    ]
    assert sorted(cached) == sorted(images)
    assert np.load(next((work / "results/embeddings" / caches[0]).glob("*.npy"))).shape[1:] == (256, 16, 16)


def test_checkpoints_hold_what_trained(vit_b_run: tuple[Path, str, str]) -> None:
    work, _, _ = vit_b_run
    frozen = load_state_dict(work / "results/models/ft_sam+sawd/checkpoint.pt")
    assert not any(k.startswith("image_encoder.") for k in frozen) and any(k.startswith("sawd.") for k in frozen)
    adapted = load_state_dict(work / "results/models/med_sa/checkpoint.pt")
    encoder = [k for k in adapted if k.startswith("image_encoder.")]
    assert encoder and all(is_adapter_parameter(k) for k in encoder)  # the adapters, not the frozen ViT-B
    assert not (work / "results/models/sam").exists()  # zero-shot


def test_tables_have_the_baseline_rows(vit_b_run: tuple[Path, str, str]) -> None:
    work, _, _ = vit_b_run
    table1 = pd.read_csv(work / "results/table1.csv")
    assert list(zip(table1["method"], table1["prompt"])) == [(m, p) for p in ("box", "point") for m in METHODS]
    assert table1["avg"].between(0, 100).all()
    paper = table1.set_index(["method", "prompt"])["paper_avg"]
    assert paper.notna()[("sam", "box")] and paper.notna()[("med_sa", "box")]  # the paper's SAM and Med-SA rows
    weights = json.loads((work / "results/table1.json").read_text())["weights"]
    assert weights["vit_b"] == {"weights": "results/weights/sam_vit_b_01ec64.pth", "sha256": vit_b_run[2]}
    table2 = pd.read_csv(work / "results/table2.csv")
    assert {"ft_sam+sawd", "med_sa+sawd"} <= set(table2["method"])  # the SAWD rows have mDSC
    for figure in ("table1.png", "qualitative.png", "training_curves.png"):
        assert (work / "results/figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table5 = pd.read_csv(work / "results/table5.csv")
    rows = table5.set_index(["method", "prompt"])
    assert rows.loc[("med_sa", "box"), "paper_dsc"] == 77.23 and rows.loc[("med_sa+sawd", "box"), "paper_dsc"] == 78.42
    assert pd.isna(rows.loc[("med_sa", "box"), "mdsc"]) and rows.loc[("med_sa+sawd", "box"), "mdsc"] >= 0
    assert {"ft_sam+sawd", "med_sa", "med_sa+sawd"} <= set(table5["method"])


def test_where_the_weights_come_from_reruns_nothing(vit_b_run: tuple[Path, str, str]) -> None:
    work, config, _ = vit_b_run
    moved = _overlay(
        work, "vit_b_url.yaml", {"encoder": {"vit_b": {"url": "https://example.org/sam_vit_b_01ec64.pth"}}}
    )
    assert planned_jobs(work, config, moved) == {}
    other = _overlay(work, "vit_b_sha.yaml", {"encoder": {"vit_b": {"sha256": "0" * 64}}})
    jobs = planned_jobs(work, config, other)  # other weights: everything ViT-B reruns
    assert jobs.get("fetch_vit_b") == 1 and jobs.get("embed_images") == 4 and jobs.get("train") == 3


def test_a_wrong_checksum_fails_in_one_line_and_leaves_no_file(tmp_path: Path, random_vit_b: tuple[Path, str]) -> None:
    work = copy_workflow(tmp_path)
    mirror = work / "mirror"
    mirror.mkdir()
    os.link(random_vit_b[0], mirror / "sam_vit_b_01ec64.pth")
    config = _overlay(work, "bad.yaml", {"methods": ["sam"], "encoder": {"vit_b": {"mirror": str(mirror)}}})
    proc = snakemake(
        work, "--cores", "1", overlays=(config,), targets=("results/weights/sam_vit_b_01ec64.pth",), check=False
    )
    assert proc.returncode != 0
    log = (work / "results/logs/fetch_vit_b.log").read_text().strip()
    assert len(log.splitlines()) == 1 and "sam_vit_b_01ec64.pth" in log and "ec2df627" in log  # the official digest
    assert not list((work / "results/weights").glob("*"))
