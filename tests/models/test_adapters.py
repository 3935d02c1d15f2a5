"""Adapters for SAM's ViT (segsam.models.adapters)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from segsam.methods import METHODS
from segsam.models.adapters import (
    AdaptedBlock,
    BottleneckAdapter,
    ChannelConvAdapter,
    add_adapters,
    is_adapter_parameter,
)
from segsam.models.build import set_trainable
from segsam.models.vit import ViTGeometry, build_sam_vit, load_vit_weights

SMALL = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))


def _zero_adapter_outputs(encoder: nn.Module) -> None:
    with torch.no_grad():
        for name, module in encoder.named_modules():
            if is_adapter_parameter(name) and name.endswith(".up"):
                module.weight.zero_()
                module.bias.zero_()


@pytest.mark.parametrize("kind", ["sam_med2d", "med_sa"])
def test_adapters_keep_sam_keys_and_add_their_own(kind):
    plain = build_sam_vit(SMALL)
    adapted = add_adapters(copy.deepcopy(plain), kind)
    plain_keys, adapted_keys = set(plain.state_dict()), set(adapted.state_dict())
    assert plain_keys < adapted_keys
    new = adapted_keys - plain_keys
    assert new and all(is_adapter_parameter(k) for k in new)
    assert not any(is_adapter_parameter(k) for k in plain_keys)
    assert all(isinstance(block, AdaptedBlock) for block in adapted.blocks)
    # released weights (no adapter keys) load; adapters keep their initialisation
    load_vit_weights(adapted, plain.state_dict())


@pytest.mark.parametrize("kind", ["sam_med2d", "med_sa"])
def test_adapter_with_zero_output_is_the_pretrained_block(kind):
    torch.manual_seed(0)
    plain = build_sam_vit(SMALL).eval()
    adapted = add_adapters(copy.deepcopy(plain), kind).eval()
    image = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        base = plain(image)
        near = adapted(image)
        _zero_adapter_outputs(adapted)
        exact = adapted(image)
    torch.testing.assert_close(exact, base, rtol=0, atol=1e-6)
    assert not torch.equal(near, base)  # small, not zero, initial adapter output
    torch.testing.assert_close(near, base, rtol=0, atol=0.1)


def test_channel_conv_adapter_handles_odd_grids():
    adapter = ChannelConvAdapter(32)
    x = torch.randn(2, 15, 15, 32)
    assert adapter(x).shape == x.shape


def test_bottleneck_adapter_skip():
    adapter = BottleneckAdapter(16, skip=True)
    with torch.no_grad():
        adapter.up.weight.zero_()
    x = torch.randn(3, 16)
    assert torch.equal(adapter(x), x)
    assert BottleneckAdapter(16, skip=False)(x).shape == x.shape


def test_invalid_adapters_are_rejected():
    encoder = build_sam_vit(SMALL)
    with pytest.raises(ValueError, match="unknown adapter kind"):
        add_adapters(encoder, "lora")
    add_adapters(encoder, "med_sa")
    with pytest.raises(ValueError, match="already has adapters"):
        add_adapters(encoder, "med_sa")
    with pytest.raises(ValueError, match="not a SAM ViT block"):
        AdaptedBlock(nn.Linear(2, 2), "sam_med2d")
    with pytest.raises(ValueError, match="reduction"):
        ChannelConvAdapter(2, reduction=0.1)


def test_only_adapters_train_in_the_encoder():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = add_adapters(build_sam_vit(SMALL), "sam_med2d")
            self.mask_decoder = nn.Linear(2, 2)

    model = Holder()
    set_trainable(model, METHODS["sam_med2d"])
    for name, param in model.named_parameters():
        expected = name.startswith("mask_decoder.") or is_adapter_parameter(name)
        assert param.requires_grad is expected, name
