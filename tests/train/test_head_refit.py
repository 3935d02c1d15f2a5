"""SAWD's class head fitted again after training (segsam.train.head_refit, Trainer.refit_class_head)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.train import head_refit
from segsam.train.head_refit import refit_class_head
from segsam.train.heldout import HeldOut
from segsam.train.stream import load_train_images
from tests.helpers import method_model
from tests.train.test_ddp import make_training_set, small_config
from tests.train.test_loop import _train


def _items_and_store(masks: Path, cache: Path, config: dict) -> tuple[list, EmbeddingStore]:
    table = pd.read_parquet(masks)
    items = load_train_images(table, Vocabulary.from_config(config), 256)
    return items, EmbeddingStore.open(cache, table["case"].unique())


def _named_right(model: torch.nn.Module, items: list, store: EmbeddingStore) -> float:
    return HeldOut(items, store).class_accuracy(model, None, torch.device("cpu"))  # box prompts, as evaluated


def test_refit_fits_the_class_head_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head_refit, "PROMPTS_PER_PASS", 3)  # a slice's 4 prompts in two passes
    config = small_config(tmp_path)
    items, store = _items_and_store(*make_training_set(tmp_path, n_images=4), config)
    torch.manual_seed(0)
    model = method_model("sawd_unpmt", config)
    model.train()
    before_acc = _named_right(model, items, store)
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    embeddings = lambda item: store.get([item.image])  # noqa: E731
    result = refit_class_head(model, items, embeddings, None, torch.device("cpu"), np.random.default_rng(0))
    assert model.training  # left as it was
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("sawd.class_head.") for k in changed)
    assert (result.images, result.objects, result.classes) == (4, 8, 2)
    # 8 objects of 2 classes, a box and a point each: the refit fits them all, and the model's head is the fitted one
    assert _named_right(model, items, store) == result.train_acc == 1.0 > before_acc


def test_refit_needs_sawd_and_objects(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    items, store = _items_and_store(*make_training_set(tmp_path, n_images=4), config)
    embeddings = lambda item: store.get([item.image])  # noqa: E731
    cpu, rng = torch.device("cpu"), np.random.default_rng(0)
    with pytest.raises(ValueError, match="SAWD's prompted branch"):
        refit_class_head(method_model("ft_decoder", config), items, embeddings, None, cpu, rng)
    with pytest.raises(ValueError, match="needs training objects"):
        refit_class_head(method_model("sawd_pmt", config), [], embeddings, None, cpu, rng)


def test_training_refits_sawd_methods_unless_switched_off(tmp_path: Path) -> None:
    masks, cache = make_training_set(tmp_path, n_images=4)
    config = small_config(tmp_path)
    summary = _train("sawd_pmt", masks, cache, tmp_path / "refitted", config)
    refit = summary["class_head_refit"]
    assert (refit["images"], refit["objects"], refit["classes"]) == (4, 8, 2)
    assert json.loads((tmp_path / "refitted" / "summary.json").read_text())["class_head_refit"] == refit
    run = mlflow.MlflowClient(config["tracking"]["uri"]).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["refit/train_acc"] == pytest.approx(refit["train_acc"])
    config["train"]["class_head_refit"] = 3
    assert _train("sawd_pmt", masks, cache, tmp_path / "three", config)["class_head_refit"]["images"] == 3
    assert _train("ft_decoder", masks, cache, tmp_path / "plain", config)["class_head_refit"] is None
    config["train"]["class_head_refit"] = 0
    assert _train("sawd_pmt", masks, cache, tmp_path / "off", config)["class_head_refit"] is None
    refitted, off = (torch.load(tmp_path / name / "ckpt.pt", weights_only=True) for name in ("refitted", "off"))
    changed = {k for k in refitted if not torch.equal(refitted[k], off[k])}  # same training, then the refit
    assert changed and all(k.startswith("sawd.class_head.") for k in changed)


def test_a_refit_that_misses_training_classes_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    masks, cache = make_training_set(tmp_path, n_images=4)
    table = pd.read_parquet(masks)
    table.loc[table["image"] == table["image"].min(), "class_id"] = 3  # 3 classes, at most 2 per slice
    table.to_parquet(masks, index=False)
    config = small_config(tmp_path)
    config["train"]["class_head_refit"] = 1
    with caplog.at_level(logging.WARNING, logger="segsam.train.loop"):
        refit = _train("sawd_pmt", masks, cache, tmp_path / "one", config)["class_head_refit"]
    assert refit["images"] == 1 and refit["classes"] < 3
    assert f"saw {int(refit['classes'])} of the 3 training classes" in caplog.text
