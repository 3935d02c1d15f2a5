"""Tests for segsam.models.preprocess."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from segsam.models.preprocess import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    ResizeInfo,
    encoder_input,
    prepare_image,
    resized_shape,
)


def box_of(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(np.asarray(mask))
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


@pytest.mark.parametrize(
    "shape, resized",
    [((101, 122), (212, 256)), ((300, 100), (256, 85)), ((256, 256), (256, 256)), ((64, 32), (256, 128))],
)
def test_prepare_image_geometry(shape, resized):
    rng = np.random.default_rng(0)
    image = rng.integers(10, 200, size=shape, dtype=np.uint8)
    tensor, info = prepare_image(image)
    assert tensor.shape == (3, 256, 256) and tensor.dtype == torch.float32
    assert info.original == shape and info.resized == resized
    assert info.scale == pytest.approx(256 / max(shape))
    h, w = resized
    content = tensor[:, :h, :w]
    assert content.min() == 0.0 and content.max() == pytest.approx(1.0)
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[0], tensor[2])
    assert (tensor[:, h:, :] == 0).all() and (tensor[:, :, w:] == 0).all()


def test_prepare_image_normalises_before_padding():
    image = np.full((50, 100), 100, dtype=np.uint8)
    image[10:20, 10:20] = 200
    tensor, info = prepare_image(image)
    # min-max over the image, not the padding: the background (100) maps to 0, the square (200) to 1.
    assert tensor[0, 5, 5] == 0.0
    assert tensor[0, 15 * 256 // 100, 15 * 256 // 100] == pytest.approx(1.0)


def test_prepare_image_rgb_and_constant():
    rgb = np.zeros((40, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    tensor, info = prepare_image(rgb, size=64)
    assert tensor.shape == (3, 64, 64) and info.resized == (64, 48)
    assert tensor[0, :64, :48].min() == 1.0 and tensor[1].max() == 0.0
    flat, _ = prepare_image(np.full((10, 10), 7, dtype=np.uint8))
    assert torch.isfinite(flat).all() and flat.max() == 0.0


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 2)), np.zeros((2, 3, 4, 4)), np.zeros((0, 5)), np.full((3, 3), np.nan)]
)
def test_prepare_image_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        prepare_image(bad)


def test_to_model_coords_maps_corners():
    info = ResizeInfo.for_shape(101, 122)
    corners = np.array([[0, 0], [122, 101], [61, 50.5]])
    np.testing.assert_allclose(info.to_model_coords(corners), [[0, 0], [256, 212], [128, 106]], rtol=1e-6)
    box = np.array([10, 20, 30, 40])
    np.testing.assert_allclose(
        info.box_to_model_coords(box), info.to_model_coords(box.reshape(2, 2)).reshape(4), rtol=1e-6
    )
    with pytest.raises(ValueError):
        info.to_model_coords(np.zeros(3))
    with pytest.raises(ValueError):
        info.box_to_model_coords(np.zeros((2, 3)))


@pytest.mark.parametrize("shape", [(101, 122), (300, 100), (512, 512), (80, 200)])
def test_box_and_mask_round_trip(shape):
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    y0, y1, x0, x1 = height // 5, height // 2, width // 3, 4 * width // 5
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    info = ResizeInfo.for_shape(height, width)

    model_mask = info.mask_to_model(mask)
    assert model_mask.shape == (256, 256) and model_mask.dtype == torch.bool
    assert not model_mask[info.resized[0] :].any() and not model_mask[:, info.resized[1] :].any()
    # The box mapped to model coordinates agrees with the bounding box of the resized mask
    # to within one model pixel (plus one source pixel when upscaling).
    tolerance = 1.0 + max(info.scale, 1.0)
    np.testing.assert_allclose(info.box_to_model_coords(box_of(mask)), box_of(model_mask.numpy()), atol=tolerance)

    # Model-frame logits of that mask come back onto the slice.
    logits = torch.where(model_mask, 10.0, -10.0)[None, None]
    back = info.logits_to_original(logits)
    assert back.shape == (1, 1, height, width)
    restored = (back[0, 0] > 0).numpy()
    dsc = 2 * (restored & mask).sum() / (restored.sum() + mask.sum())
    assert dsc > 0.97
    np.testing.assert_allclose(box_of(restored), box_of(mask), atol=max(1.0, 1.0 / info.scale) + 1)


def test_logits_to_original_keeps_leading_dims_and_rejects_bad_sizes():
    info = ResizeInfo.for_shape(30, 40, size=64)
    assert info.logits_to_original(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 30, 40)
    assert info.logits_to_original(torch.zeros(64, 64)).shape == (30, 40)
    with pytest.raises(ValueError):
        info.logits_to_original(torch.zeros(1, 256, 256))
    with pytest.raises(ValueError):
        info.mask_to_model(np.zeros((40, 30)))


def test_resize_info_validates():
    with pytest.raises(ValueError):
        resized_shape(0, 10, 256)
    with pytest.raises(ValueError):
        ResizeInfo((10, 10), (300, 300), 30.0, 256)
    info = ResizeInfo.for_shape(10, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.scale = 2.0


def test_encoder_input_uses_sams_normalisation_for_vit_b_and_zero_padding():
    image = np.arange(40 * 80, dtype=np.float64).reshape(40, 80) % 256
    plain, info = prepare_image(image, 256)
    tiny, tiny_info = encoder_input(image, 256, "tiny_vit")
    assert torch.equal(tiny, plain) and tiny_info == info
    vit, vit_info = encoder_input(image, 256, "vit_b")
    assert vit_info == info and info.resized == (128, 256)
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    torch.testing.assert_close(vit[:, :128], (plain[:, :128] * 255 - mean) / std)
    assert (vit[:, 128:] == 0).all()  # SAM pads after normalising
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_input(image, 256, "vit_h")
