"""Held-out class accuracy logged each epoch (segsam.train.heldout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segsam.data.vocabulary import Vocabulary
from segsam.train.heldout import HeldOut
from tests.helpers import method_model
from tests.train.test_ddp import make_training_set, small_config
from tests.train.test_loop import _train


def _split(masks: Path, n_test: int) -> None:
    """Move the last ``n_test`` images of the training set to the test split."""
    table = pd.read_parquet(masks)
    test = sorted(table["image"].unique())[-n_test:]
    table.loc[table["image"].isin(test), "split"] = "test"
    table.to_parquet(masks, index=False)


def test_heldout_accuracy_is_the_share_of_test_objects_named_right(tmp_path: Path) -> None:
    masks, cache = make_training_set(tmp_path, n_images=4)
    _split(masks, 2)
    config = small_config(tmp_path)
    vocabulary = Vocabulary.from_config(config)
    heldout = HeldOut.from_index(pd.read_parquet(masks), vocabulary, 256, cache, max_images=1)
    assert len(heldout.items) == 1 and len(heldout.items[0].classes) == 2  # the first test slice, both objects
    torch.manual_seed(0)
    model = method_model("sawd_unpmt", config)
    model.train()
    accuracy = heldout.class_accuracy(model, None, torch.device("cpu"))
    assert model.training and model.sawd.training  # left as it was
    item = heldout.items[0]
    with torch.inference_mode():
        model.eval()
        boxes = np.stack(
            [
                [m.nonzero()[:, 1].min(), m.nonzero()[:, 0].min(), m.nonzero()[:, 1].max(), m.nonzero()[:, 0].max()]
                for m in item.masks
            ]
        ).astype(np.float32)
        out = model(
            heldout.store.get([item.image]),
            np.zeros(2, bool),
            boxes,
            np.zeros((2, 2), np.float32),
            image_index=np.zeros(2, np.int64),
        )
    assert accuracy == float((out.class_logits.argmax(1).numpy() == item.classes).mean())
    assert HeldOut.from_index(pd.read_parquet(masks), vocabulary, 256, cache, max_images=0) is None


def test_training_logs_the_heldout_accuracy_of_each_epoch(tmp_path: Path) -> None:
    masks, cache = make_training_set(tmp_path, n_images=4)
    _split(masks, 1)
    config = small_config(tmp_path)
    config["train"].update({"batch_size": 3, "micro_batch": 3})
    history = _train("sawd_unpmt", masks, cache, tmp_path / "out", config)["history"]
    assert 0.0 <= history[0]["heldout_class_acc"] <= 1.0 and 0.0 <= history[0]["class_acc"] <= 1.0
    plain = _train("ft_decoder", masks, cache, tmp_path / "plain", config)["history"]
    assert "heldout_class_acc" not in plain[0] and "class_acc" not in plain[0]  # no class head
