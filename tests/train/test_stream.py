"""Streamed training slices (segsam.train.stream): the dataset, the per-rank epoch shards, the loader, cache off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segsam.config import load_config
from segsam.data.io import read_png
from segsam.data.vocabulary import Vocabulary
from segsam.methods import get_method
from segsam.models.method_model import build_method_model, load_trained
from segsam.models.preprocess import ResizeInfo, encoder_input
from segsam.train.job import TrainJob
from segsam.train.loop import train
from segsam.train.stream import EpochShard, TrainSlices, load_train_images, prompt_rng, train_loader
from tests.train.test_ddp import make_training_set, small_config


@pytest.fixture
def vocabulary() -> Vocabulary:
    return Vocabulary.read(load_config()["vocabulary"])


def test_an_item_is_its_image_masks_classes_and_pixels(tmp_path: Path, vocabulary: Vocabulary) -> None:
    masks, _ = make_training_set(tmp_path, n_images=3)
    table = pd.read_parquet(masks).sample(frac=1.0, random_state=1)  # any row order
    slices = TrainSlices(table, vocabulary, 256, pixels="tiny_vit")
    assert len(slices) == 3
    first = sorted(table["image"].unique())[0]
    item = slices[0]
    rows = table[table["image"] == first].sort_values("mask")
    expected = ResizeInfo.for_shape(64, 64, 256).mask_to_model(np.stack([read_png(p) > 0 for p in rows["mask"]]))
    assert item.image == first and torch.equal(item.masks, expected)
    assert item.classes.tolist() == [vocabulary.class_index[int(c)] for c in rows["class_id"]]
    assert torch.equal(item.pixels, encoder_input(read_png(first), 256, "tiny_vit")[0])
    assert TrainSlices(table, vocabulary, 256)[0].pixels is None  # the cache serves the image
    # paths live in Arrow buffers, not in per-slice Python objects that forked workers would copy
    assert slices.images.nbytes > 0 and slices.mask_paths.nbytes > 0


def test_bad_arguments_are_refused(vocabulary: Vocabulary) -> None:
    with pytest.raises(ValueError, match="no masks"):
        TrainSlices(pd.DataFrame(columns=["image", "mask", "class_id", "height", "width"]), vocabulary, 256)
    with pytest.raises(ValueError, match="does not split over 3"):
        EpochShard(list(range(8)), 4, rank=0, world=3)
    with pytest.raises(ValueError, match="rank 2"):
        EpochShard(list(range(8)), 4, rank=2, world=2)


def test_ranks_split_each_step_and_a_resumed_epoch_starts_where_it_stopped() -> None:
    order = np.random.default_rng(0).permutation(11).tolist()
    world = 2
    shards = [EpochShard(order, 4, rank=r, world=world) for r in range(world)]
    assert shards[0].steps == 3 and len(shards[0]) == 3
    steps = [list(s) for s in shards]
    for b in range(3):
        together = sorted(steps[0][b] + steps[1][b])
        assert together == sorted(order[4 * b : 4 * b + 4])  # the global batch, each image once
    assert steps[0][2] == [order[8], order[10]] and steps[1][2] == [order[9]]
    resumed = EpochShard(order, 4, rank=1, world=world, start=2)
    assert list(resumed) == steps[1][2:] and resumed.positions(2) == [9]


def test_a_rank_the_last_batch_leaves_without_an_image_reads_a_stand_in() -> None:
    order = [4, 2, 0, 3, 1]  # a last global batch of 1 image over 4 ranks
    shards = [EpochShard(order, 4, rank=r, world=4) for r in range(4)]
    assert [s.stands_in(1) for s in shards] == [False, True, True, True]
    assert [list(s)[1] for s in shards] == [[1], [1], [1], [1]]  # the batch's first image
    assert [s.read_positions(1) for s in shards] == [[4]] * 4
    assert not any(s.stands_in(0) for s in shards) and shards[3].positions(1) == []


def test_prompts_are_seeded_by_place_not_by_process() -> None:
    a, b = prompt_rng(0, 1, 5).random(3), prompt_rng(0, 1, 5).random(3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, prompt_rng(0, 2, 5).random(3))  # another epoch
    assert not np.array_equal(a, prompt_rng(0, 1, 6).random(3))  # another place


def test_worker_processes_deliver_what_the_process_reads_itself(tmp_path: Path, vocabulary: Vocabulary) -> None:
    masks, _ = make_training_set(tmp_path, n_images=6)
    slices = TrainSlices(pd.read_parquet(masks), vocabulary, 256, pixels="plain")
    shard = EpochShard([5, 0, 3, 1, 4, 2], 2, rank=1, world=2, start=1)
    own = list(train_loader(slices, shard, workers=0, pin_memory=False))
    forked = list(train_loader(slices, shard, workers=2, pin_memory=False))
    assert [[i.image for i in step] for step in own] == [[slices[1].image], [slices[2].image]]
    for mine, theirs in zip(own, forked):
        for x, y in zip(mine, theirs):
            assert x.image == y.image and torch.equal(x.masks, y.masks) and torch.equal(x.pixels, y.pixels)


def test_load_train_images_reads_every_image(tmp_path: Path, vocabulary: Vocabulary) -> None:
    masks, _ = make_training_set(tmp_path, n_images=2)
    items = load_train_images(pd.read_parquet(masks), vocabulary)
    assert [len(i.classes) for i in items] == [2, 2] and all(i.pixels is None for i in items)


@pytest.mark.slow
def test_with_the_cache_off_a_frozen_encoder_method_trains_from_the_images(tmp_path: Path) -> None:
    """cache.enabled: false: no cache folder; the frozen encoder runs in the step; the checkpoint is the
    cache-on method's (no encoder tensors), so it evaluates either way."""
    masks, _ = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["cache"]["enabled"] = False
    config["train"].update({"batch_size": 2, "micro_batch": 1, "workers": 1})
    out = tmp_path / "out"
    job = TrainJob("ft_decoder", masks, None, out / "ckpt.pt", out / "summary.json", config=config, threads=2)
    summary = train(job)
    assert summary["steps"] == 1 and np.isfinite(summary["history"][0]["loss"])
    saved = torch.load(out / "ckpt.pt", weights_only=True)
    assert saved and not any(k.startswith("image_encoder.") for k in saved)
    cached, spec = load_config(), get_method("ft_decoder")
    model = build_method_model(spec, cached, len(Vocabulary.from_config(cached)), None)
    load_trained(model, out / "ckpt.pt", spec)
    assert model.image_encoder is None  # cache on: the same weights, no encoder
