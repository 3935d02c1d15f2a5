"""Prompt geometry from a mask (segsam.data.prompts): tight box, jittered box, random point."""

from __future__ import annotations

import numpy as np
import pytest

from segsam.data.prompts import jitter_box, mask_box, random_point


def _blob() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:9, 10:22] = True
    mask[9:15, 12:14] = True  # an L shape: the bbox holds background too
    return mask


def test_box_is_the_tight_bounding_box() -> None:
    box = mask_box(_blob())
    assert box.dtype == np.float32
    assert box.tolist() == [10, 4, 21, 14]  # x0, y0, x1, y1, inclusive


def test_single_pixel_box() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 3] = True
    assert mask_box(mask).tolist() == [3, 2, 3, 2]


def test_point_is_inside_the_mask() -> None:
    mask = _blob()
    rng = np.random.default_rng(0)
    points = {tuple(random_point(mask, rng).astype(int)) for _ in range(200)}
    assert all(mask[y, x] for x, y in points)
    assert len(points) > 20  # drawn over the whole mask, not a fixed pixel


def test_empty_mask_cannot_be_prompted() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="empty"):
        mask_box(empty)
    with pytest.raises(ValueError, match="empty"):
        random_point(empty, np.random.default_rng(0))


def test_jitter_zero_is_identity() -> None:
    box = np.array([1, 2, 3, 4], dtype=np.int64)
    out = jitter_box(box, 0, (10, 10), np.random.default_rng(0))
    assert out.dtype == np.float32 and out.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("box", [[0, 0, 0, 0], [28, 17, 29, 19], [10, 4, 21, 14], [0, 0, 29, 19]])
def test_jitter_keeps_boxes_valid_and_inside(box: list[int]) -> None:
    height, width = 20, 30
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(300):
        x0, y0, x1, y1 = jitter_box(np.array(box, dtype=np.float32), 5, (height, width), rng)
        assert 0 <= x0 <= x1 <= width - 1
        assert 0 <= y0 <= y1 <= height - 1
        assert x0 >= box[0] - 5 and y0 >= box[1] - 5 and x1 <= box[2] + 5 and y1 <= box[3] + 5  # at most 5 px
        moved += (x0, y0, x1, y1) != tuple(box)
    assert moved > 0
