"""Training slices and their prompts (segsam.train.batch): prompt simulation, presence targets, label maps."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from segsam.train.batch import PromptBatch, TrainImage, label_map, presence_targets, simulate_prompts


def four_masks() -> torch.Tensor:
    """4 x 256 x 256 bool: four rectangles of different sizes."""
    masks = torch.zeros(4, 256, 256, dtype=torch.bool)
    masks[0, 10:60, 20:90] = True
    masks[1, 100:180, 100:140] = True
    masks[2, 200:230, 30:200] = True
    masks[3, 60:70, 60:70] = True
    return masks


def test_simulate_prompts_is_deterministic_and_inside_masks() -> None:
    masks = four_masks()
    first = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(7))
    second = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(7))
    for field in fields(first):
        assert np.array_equal(np.asarray(getattr(first, field.name)), np.asarray(getattr(second, field.name)))
    assert first.masks.shape == (3, 256, 256) and len(set(first.chosen.tolist())) == 3 and len(first) == 3
    for mask, point_prompt, box, point in zip(first.masks, first.is_point, first.boxes, first.points):
        if point_prompt:
            assert mask[int(point[1]), int(point[0])]
        else:
            ys, xs = np.nonzero(mask.numpy())
            assert abs(box[0] - xs.min()) <= 5 and abs(box[3] - ys.max()) <= 5


def test_simulate_prompts_keeps_its_draw_order() -> None:
    """The prompt stream is part of the results: which masks, which kinds, then each prompt's draws, in mask order."""
    masks = four_masks()
    prompts = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    chosen = rng.choice(4, size=3, replace=False)
    is_point = rng.random(3) < 0.5
    np.testing.assert_array_equal(prompts.chosen, chosen)
    np.testing.assert_array_equal(prompts.is_point, is_point)
    assert torch.equal(prompts.masks, masks[torch.from_numpy(chosen)])


def test_presence_targets_are_the_unprompted_classes() -> None:
    item = TrainImage(image="x", masks=four_masks(), classes=np.array([0, 3, 3, 5]))
    presence = presence_targets(item, np.array([1, 3]), num_classes=6)
    assert presence.shape == (2, 6)
    assert presence[0].nonzero().flatten().tolist() == [0, 3]  # mask 2 (class 3) was not prompted


def test_prompt_batch_concatenates_the_images_prompts_in_order() -> None:
    masks = four_masks()
    items = [
        TrainImage(image="a", masks=masks, classes=np.array([0, 1, 2, 3])),
        TrainImage(image="b", masks=masks[:2], classes=np.array([4, 5])),
    ]
    rng = np.random.default_rng(3)
    prompts = [simulate_prompts(item.masks, 3, 5, 0.5, rng) for item in items]
    batch = PromptBatch.gather(items, prompts, num_classes=6)
    assert len(batch) == 5 and batch.targets.shape == (5, 1, 256, 256) and batch.targets.dtype == torch.float32
    assert batch.image_index.tolist() == [0, 0, 0, 1, 1]
    assert batch.classes.tolist() == [*items[0].classes[prompts[0].chosen], *items[1].classes[prompts[1].chosen]]
    assert torch.equal(batch.presence[3:], presence_targets(items[1], prompts[1].chosen, 6))  # both masks prompted
    np.testing.assert_array_equal(batch.boxes[3:], prompts[1].boxes)
    np.testing.assert_array_equal(batch.is_point[:3], prompts[0].is_point)
    rounds = batch.repeat(3)
    assert len(rounds) == 15 and rounds.image_index.tolist() == [0, 0, 0, 1, 1] * 3
    assert torch.equal(rounds.targets[10:], batch.targets) and torch.equal(rounds.presence[5:10], batch.presence)
    np.testing.assert_array_equal(rounds.points[5:10], batch.points)
    with pytest.raises(ValueError, match="2 images but 1 prompt sets"):
        PromptBatch.gather(items, prompts[:1], num_classes=6)


def test_label_map_marks_each_object_with_its_class_plus_one() -> None:
    masks = four_masks()
    labels = label_map(TrainImage(image="x", masks=masks, classes=np.array([3, 0, 7, 1])))
    assert labels.dtype == torch.long and labels.shape == (256, 256)
    for mask, k in zip(masks, (3, 0, 7, 1)):
        assert (labels[mask] == k + 1).all()
    assert (labels[~masks.any(0)] == 0).all()
