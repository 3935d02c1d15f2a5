"""torchrun DDP on CPU (gloo): 2 ranks reach the weights of 1 rank with the same global batch.

The runs differ only in float summation order (all-reduce). Adam divides each
update by the gradient's magnitude, so parameters whose true gradient is zero
(e.g. attention key biases, to which softmax is invariant) move by up to ``lr``
on pure rounding noise. The stated tolerance is therefore on what the weights
compute: after two steps the two models' mask logits on a fixed batch agree to
1e-3 absolute (logits are O(10)) and every parameter to within one step's
maximal Adam update (``lr``); the per-step losses agree to 1e-6.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from segsam.config import load_config
from segsam.models.weights import load_state_dict
from segsam.tracking import init_store
from segsam.train.checkpoint import STATE_FILE
from segsam.train.ddp import launch, torchrun_command
from segsam.train.job import TrainJob
from tests.helpers import method_model

pytestmark = pytest.mark.slow


def make_training_set(root: Path, n_images: int = 4) -> tuple[Path, Path]:
    """A masks table of ``n_images`` train slices with 2 masks each, and a cache of random embeddings."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n_images):
        image = root / "slices" / "case_a" / "images" / f"ct--demo--case_a--z_{k:04d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 255, (64, 64), dtype=np.uint8)), str(image))
        for c in range(2):
            mask = np.zeros((64, 64), np.uint8)
            y, x = rng.integers(5, 40, size=2)
            mask[y : y + 15, x : x + 12] = 255
            path = image.parent.parent / "masks" / f"{image.stem}--{c + 1:04d}_000.png"
            path.parent.mkdir(exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(mask), str(path))
            rows.append(
                {
                    "image": str(image),
                    "mask": str(path),
                    "case": "case_a",
                    "modality": "ct",
                    "class_id": [1, 2][c],
                    "height": 64,
                    "width": 64,
                    "split": "train",
                }
            )
    masks = root / "masks.parquet"
    pd.DataFrame(rows).to_parquet(masks)
    cache = root / "cache"
    cache.mkdir()
    images = sorted({r["image"] for r in rows})
    np.save(cache / "case_a.npy", rng.standard_normal((len(images), 256, 64, 64)).astype(np.float16))
    pd.DataFrame({"row": range(len(images)), "image": images, "height": 64, "width": 64}).to_parquet(
        cache / "case_a.parquet"
    )
    return masks, cache


def small_config(root: Path) -> dict:
    config = copy.deepcopy(load_config())
    config["train"].update(
        {"epochs": 1, "batch_size": 4, "masks_per_image": 2, "lr": 1e-3, "checkpoint_every": 0, "lr_milestones": []}
    )
    config["tracking"].update({"uri": f"sqlite:///{root}/mlflow.db", "artifacts": str(root / "artifacts")})
    init_store(
        config["tracking"]["uri"],
        config["tracking"]["experiment"],
        config["tracking"]["artifacts"],
        root / "mlflow.json",
    )
    return config


@contextlib.contextmanager
def deadline(seconds: int, what: str) -> Iterator[None]:
    """Fail with ``what`` instead of hanging when the block outlasts ``seconds`` (a DDP hang)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: {what}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_two_ranks_match_one_rank(tmp_path: Path) -> None:
    masks, cache = make_training_set(tmp_path)
    config = small_config(tmp_path)
    config["train"]["batch_size"] = 2  # global batch: 2 steps of 2 images (1 per rank with 2 ranks)
    weights, summaries = {}, {}
    for nproc in (1, 2):
        out = tmp_path / f"ranks{nproc}"
        job = TrainJob.create(
            "ft_decoder",
            masks,
            cache,
            out / "checkpoint.pt",
            out / "summary.json",
            config=config,
            threads=2,
            state_dir=out / "state",
        )
        launch(job, nproc)
        weights[nproc] = load_state_dict(out / "checkpoint.pt")
        summaries[nproc] = json.loads((out / "summary.json").read_text())
        assert not (out / "state" / STATE_FILE).exists()  # removed once training finished
    assert summaries[2]["world_size"] == 2 and summaries[1]["world_size"] == 1
    assert summaries[1]["history"][0]["loss"] == pytest.approx(summaries[2]["history"][0]["loss"], abs=1e-6)
    assert weights[1].keys() == weights[2].keys()
    lr = config["train"]["lr"]
    assert max(float((weights[1][k].float() - weights[2][k].float()).abs().max()) for k in weights[1]) <= lr * 1.01

    torch.manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64)
    is_point = np.array([True, False, True, False])
    boxes = np.array([[10, 10, 100, 120]] * 4, np.float32)
    points = np.array([[50, 60]] * 4, np.float32)
    logits = []
    for nproc in (1, 2):
        model = method_model("ft_decoder", config, None)
        model.load_state_dict(weights[nproc], strict=False)
        with torch.inference_mode():
            logits.append(model.eval()(embeddings, is_point, boxes, points).masks)
    assert float((logits[0] - logits[1]).abs().max()) < 1e-3


def test_two_ranks_match_one_rank_when_adapters_train_from_images(
    tmp_path: Path, random_vit_b: tuple[Path, str]
) -> None:
    """Med-SA: the ViT-B encoder (with trainable adapters) runs inside the DDP forward pass.

    Same tolerance as above: the loss to 1e-5 and every parameter, adapters included, to within
    one step's maximal Adam update (lr).
    """
    masks, _ = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["encoder"]["vit_b"].update(weights=str(random_vit_b[0]), sha256=random_vit_b[1])
    config["train"].update({"batch_size": 2, "micro_batch": 1})
    weights, losses = {}, {}
    for nproc in (1, 2):
        out = tmp_path / f"ranks{nproc}"
        job = TrainJob.create(
            "med_sa", masks, None, out / "checkpoint.pt", out / "summary.json", config=config, threads=2
        )
        launch(job, nproc)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["world_size"] == nproc
        weights[nproc], losses[nproc] = load_state_dict(out / "checkpoint.pt"), summary["history"][0]["loss"]
    assert losses[1] == pytest.approx(losses[2], abs=1e-5)
    adapters = [k for k in weights[1] if k.startswith("image_encoder.")]
    assert adapters and weights[1].keys() == weights[2].keys()
    lr = config["train"]["lr"]
    assert max(float((weights[1][k].float() - weights[2][k].float()).abs().max()) for k in weights[1]) <= lr * 1.01
    torch.manual_seed(config["train"]["seed"])  # the trainer's initialisation of the adapters
    initial = method_model("med_sa", config, None).state_dict()
    assert any(not torch.equal(initial[k], weights[2][k]) for k in adapters)  # the adapters trained


def test_torchrun_command_single_and_multi_node(tmp_path: Path) -> None:
    single = torchrun_command(4, {"nnodes": 1}, tmp_path / "a.json")
    assert "--standalone" in single and "--nproc_per_node=4" in single
    multi = torchrun_command(
        8, {"nnodes": 2, "rdzv_backend": "c10d", "rdzv_endpoint": "node0:29500", "rdzv_id": "job1"}, tmp_path / "a.json"
    )
    assert "--nnodes=2" in multi and "--rdzv_endpoint=node0:29500" in multi and "--standalone" not in multi


def test_a_last_batch_that_leaves_a_rank_no_image(tmp_path: Path) -> None:
    """3 images, global batch 2, 2 ranks: the second step gives rank 1 nothing.

    That rank still takes part in every collective (its gradient counts zero),
    so the run ends and reaches the weights of one rank.
    """
    masks, cache = make_training_set(tmp_path, n_images=3)
    config = small_config(tmp_path)
    config["train"]["batch_size"] = 2
    weights, losses = {}, {}
    for nproc in (1, 2):
        out = tmp_path / f"ranks{nproc}"
        job = TrainJob.create(
            "ft_decoder", masks, cache, out / "checkpoint.pt", out / "summary.json", config=config, threads=2
        )
        with deadline(600, "a rank waits in an all-reduce the other never joins"):
            launch(job, nproc)
        weights[nproc] = load_state_dict(out / "checkpoint.pt")
        losses[nproc] = json.loads((out / "summary.json").read_text())["history"][0]["loss"]
    assert losses[1] == pytest.approx(losses[2], abs=1e-5)
    lr = config["train"]["lr"]
    assert max(float((weights[1][k].float() - weights[2][k].float()).abs().max()) for k in weights[1]) <= lr * 1.01
