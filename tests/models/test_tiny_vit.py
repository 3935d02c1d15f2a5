"""Tests for segsam.models.tiny_vit."""

from __future__ import annotations

import pytest
import torch

from segsam.models.tiny_vit import (
    PatchMerging,
    TinyViT,
    TinyViTBlock,
    WindowAttention,
    window_partition,
    window_unpartition,
)
from segsam.models.weights import litemedsam_checkpoint, load_state_dict


@pytest.fixture(scope="module")
def encoder_state() -> dict[str, torch.Tensor]:
    state = load_state_dict(litemedsam_checkpoint())
    prefix = "image_encoder."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def small_tiny_vit() -> TinyViT:
    return TinyViT(img_size=32, embed_dims=(8, 16, 20, 40), num_heads=(1, 2, 2, 4), out_chans=24)


def test_litemedsam_encoder_weights_load_strictly(encoder_state):
    model = TinyViT()
    result = model.load_state_dict(encoder_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(model.state_dict()) == set(encoder_state)
    # 5.7 M parameters (docs/data.md#data-available-offline).
    assert 5.6e6 < sum(p.numel() for p in model.parameters()) < 5.8e6


def test_litemedsam_encoder_output_shape(encoder_state):
    model = TinyViT().eval()
    model.load_state_dict(encoder_state, strict=True)
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 256, 64, 64)
    assert torch.isfinite(out).all()
    # The neck ends with LayerNorm2d: per-position channel statistics follow its affine parameters.
    assert out.std() > 0.01


def test_stage_resolutions_follow_litemedsam():
    model = small_tiny_vit().eval()
    x = model.patch_embed(torch.rand(1, 3, 32, 32))
    sizes = [tuple(x.shape[1:])]
    with torch.inference_mode():
        for stage in model.layers:
            x = stage(x)
            sizes.append(tuple(x.shape[1:]))
    # No downsampling in the embedding; merges at stride 2, 2, 1.
    assert sizes == [(8, 32, 32), (16, 16, 16), (20, 8, 8), (40, 8, 8), (40, 8, 8)]
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 24, 8, 8)
    assert model.embedding_size == 8


def test_relative_bias_index_uses_absolute_offsets():
    attention = WindowAttention(dim=8, num_heads=2, window_size=3)
    idxs = attention.attention_bias_idxs
    assert idxs.shape == (9, 9)
    # token (row 0, col 0) vs (row 2, col 1): |dy| = 2, |dx| = 1 -> entry 2 * 3 + 1
    assert idxs[0, 2 * 3 + 1] == 7
    assert torch.equal(idxs, idxs.T)
    assert torch.equal(idxs.diagonal(), torch.zeros(9, dtype=torch.long))
    assert "attention_bias_idxs" not in attention.state_dict()
    assert attention.attention_biases.shape == (2, 9)


def test_window_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attention = WindowAttention(dim=12, num_heads=3, window_size=2)
    with torch.no_grad():
        attention.attention_biases.normal_()
    x = torch.randn(5, 4, 12)
    qkv = attention.qkv(attention.norm(x)).view(5, 4, 3, 12).transpose(1, 2)
    q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    weights = (q @ k.transpose(-1, -2) / 2.0 + attention.relative_bias()).softmax(-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(5, 4, 12))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw", [(7, 7), (9, 12), (14, 5)])
def test_window_partition_round_trip(hw):
    x = torch.randn(2, *hw, 3)
    windows, padded = window_partition(x, 7)
    assert padded == (-(-hw[0] // 7) * 7, -(-hw[1] // 7) * 7)
    assert windows.shape == (2 * padded[0] * padded[1] // 49, 49, 3)
    # The first window holds the top-left 7 x 7 patch in row-major order.
    top_left = torch.nn.functional.pad(x, (0, 0, 0, padded[1] - hw[1], 0, padded[0] - hw[0]))[0, :7, :7]
    torch.testing.assert_close(windows[0], top_left.reshape(49, 3))
    torch.testing.assert_close(window_unpartition(windows, 7, padded, hw), x)


def test_block_keeps_shape_with_padding():
    block = TinyViTBlock(dim=16, num_heads=2, window_size=7).eval()
    x = torch.randn(2, 10, 9, 16)
    assert block(x).shape == x.shape


def test_patch_merging_stride():
    assert PatchMerging(4, 8, stride=2)(torch.randn(1, 4, 9, 9)).shape == (1, 8, 5, 5)
    assert PatchMerging(4, 8, stride=1)(torch.randn(1, 4, 9, 9)).shape == (1, 8, 9, 9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": (2, 3, 5, 10)}, "divisible by num_heads"),
        ({"depths": (2, 2, 6)}, "embed_dims has 4 entries"),
        ({"merge_strides": (2, 2)}, "merge_strides needs 3"),
        ({"window_sizes": (7, 7, 0, 7)}, "window_size must be a positive"),
        ({"img_size": 250, "merge_strides": (2, 2, 4)}, "divisible by the total merge stride"),
        (
            {"depths": (2,), "embed_dims": (8,), "num_heads": (1,), "window_sizes": (7,), "merge_strides": ()},
            "two stages",
        ),
    ],
)
def test_constructor_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TinyViT(**kwargs)


def test_forward_rejects_wrong_input_size():
    with pytest.raises(ValueError, match="expected input B x 3 x 32 x 32"):
        small_tiny_vit()(torch.rand(1, 3, 64, 64))
