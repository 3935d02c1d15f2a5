"""The overlap rule: highest probability among the classes at or above the threshold, ties to the lowest id."""

from __future__ import annotations

import numpy as np
import pytest

from segsam.predict.labels import LabelBuilder


def expected_label(probabilities: dict[int, np.ndarray], threshold: float) -> np.ndarray:
    ids = sorted(probabilities)
    stack = np.stack([probabilities[c] for c in ids])
    winner = np.array(ids)[stack.argmax(0)]  # argmax takes the first (lowest id) of equal maxima
    return np.where(stack.max(0) >= threshold, winner, 0).astype(np.uint16)


def test_the_rule_does_not_depend_on_the_order_of_the_prompts() -> None:
    rng = np.random.default_rng(0)
    # three classes, class 5 prompted twice (its probability is the higher of its two prompts')
    prompts = [(5, rng.random((6, 7))), (2, rng.random((6, 7))), (9, rng.random((6, 7))), (5, rng.random((6, 7)))]
    prompts[1][1][0, :3] = prompts[2][1][0, :3] = 0.8  # ties between classes 2 and 9
    per_class = {c: np.max([p for k, p in prompts if k == c], axis=0).astype(np.float32) for c, _ in prompts}
    expected = expected_label(per_class, 0.5)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        builder = LabelBuilder((2, 6, 7), 0.5)
        for i in order:
            builder.add(1, prompts[i][0], prompts[i][1])
        assert np.array_equal(builder.label[1], expected)
        assert not builder.label[0].any()
    assert (expected[0, :3] != 9).all()  # the tie goes to the lower id (or a higher probability)


def test_below_the_threshold_is_background_and_probabilities_are_kept() -> None:
    builder = LabelBuilder((1, 2, 2), 0.5, keep_probabilities=True)
    builder.add(0, 3, np.array([[0.49, 0.5], [0.9, 0.1]]))
    builder.add(0, 3, np.array([[0.2, 0.2], [0.95, 0.7]]))
    assert builder.label[0].tolist() == [[0, 3], [3, 3]]
    assert builder.present() == [3] and builder.probability_classes() == [3]
    assert np.allclose(builder.probability(3)[0], [[0.49, 0.5], [0.95, 0.7]])


def test_prompt_free_planes_take_the_argmax_as_vocabulary_ids() -> None:
    builder = LabelBuilder((1, 1, 3), 0.5, keep_probabilities=True)
    probabilities = np.array([[[0.6, 0.1, 0.2]], [[0.3, 0.7, 0.1]], [[0.1, 0.2, 0.7]]])  # background, ids 4, 7
    builder.add_semantic(0, probabilities, [4, 7])
    assert builder.label[0].tolist() == [[0, 4, 7]]
    assert builder.probability_classes() == [4, 7]
    assert np.allclose(builder.probability(7)[0], [[0.1, 0.2, 0.7]], atol=1e-3)


def test_the_builder_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        LabelBuilder((1, 2, 2), 1.0)
    with pytest.raises(ValueError, match="shape"):
        LabelBuilder((2, 2), 0.5)
