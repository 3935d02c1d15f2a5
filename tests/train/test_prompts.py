"""Corrective clicks from the error region (segsam.train.prompts), and their rounds with a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segsam.config import load_config
from segsam.train.batch import simulate_prompts
from segsam.train.prompts import NEGATIVE, NO_CLICK, POSITIVE, add_error_clicks, error_click, error_clicks
from tests.helpers import method_model
from tests.train.test_batch import four_masks


def _square(y0: int, y1: int, x0: int, x1: int, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_missed_region_gets_a_positive_click_at_its_centre() -> None:
    target = _square(10, 50, 10, 30)
    prediction = _square(10, 50, 10, 15)  # misses columns 15..29
    (x, y), label = error_click(prediction, target)
    assert label == POSITIVE
    assert target[int(y), int(x)] and not prediction[int(y), int(x)]
    assert 20 <= x <= 24 and 26 <= y <= 33  # the innermost missed pixel, not an edge one


def test_spurious_region_gets_a_negative_click() -> None:
    target = _square(10, 20, 10, 20)
    prediction = target | _square(30, 60, 30, 60)  # a large false positive
    (x, y), label = error_click(prediction, target)
    assert label == NEGATIVE
    assert prediction[int(y), int(x)] and not target[int(y), int(x)]


def test_the_deeper_error_wins_and_the_border_counts_as_an_edge() -> None:
    target = _square(0, 64, 0, 8) | _square(20, 40, 30, 50)  # a strip along the border + a square
    prediction = np.zeros_like(target)
    (x, y), label = error_click(prediction, target)
    assert label == POSITIVE and 30 <= x < 50 and 20 <= y < 40  # the square is deeper than the strip


def test_exact_prediction_gives_no_click() -> None:
    mask = _square(5, 25, 5, 25)
    point, label = error_click(mask, mask)
    assert label == NO_CLICK and point.tolist() == [0.0, 0.0]


def test_batch_and_validation() -> None:
    targets = np.stack([_square(10, 50, 10, 30), _square(5, 25, 5, 25)])
    predictions = np.stack([np.zeros((64, 64), bool), targets[1]])
    coords, labels = error_clicks(predictions, targets)
    assert coords.shape == (2, 2) and labels.tolist() == [POSITIVE, NO_CLICK]
    with pytest.raises(ValueError, match="differ in shape"):
        error_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_add_error_clicks_rounds() -> None:
    """Round 0 has no click; each later round keeps the earlier clicks and adds one from its error."""
    torch.manual_seed(0)
    model = method_model("ft_decoder", load_config(), None).train()
    prompts = simulate_prompts(four_masks(), 3, 5, 0.5, np.random.default_rng(1))
    targets = prompts.masks.unsqueeze(1).float()
    embeddings = torch.randn(3, 256, 64, 64)
    coords, labels = add_error_clicks(
        model, embeddings, prompts.is_point, prompts.boxes, prompts.points, targets, None, rounds=2
    )
    assert coords.shape == (9, 2, 2) and labels.shape == (9, 2)
    assert (labels[:3] == NO_CLICK).all()  # round 0
    assert (labels[3:6, 1] == NO_CLICK).all() and (labels[3:6, 0] != NO_CLICK).all()  # round 1: one click
    np.testing.assert_array_equal(labels[6:, 0], labels[3:6, 0])  # round 2 keeps round 1's click
    for (x, y), label, target in zip(coords[3:6, 0], labels[3:6, 0], prompts.masks):
        assert bool(target[int(y), int(x)]) == (label == POSITIVE)  # positive inside, negative outside
