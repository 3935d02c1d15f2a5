"""LoRA on SAM's ViT attention q / v (segsam.models.lora) and the ViT's intermediate levels (segsam.models.vit)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segsam.models.adapters import is_adapter_parameter
from segsam.models.lora import LoRAQueryValue, add_lora
from segsam.models.vit import VIT_B, ViTGeometry, build_sam_vit, encode_with_levels, level_taps, load_vit_weights

SMALL = ViTGeometry(embed_dim=64, depth=3, num_heads=2, global_attn_indexes=(1, 2))


def test_lora_keeps_the_projection_and_updates_queries_and_values_only() -> None:
    torch.manual_seed(0)
    qkv = nn.Linear(8, 24)
    lora = LoRAQueryValue(qkv, rank=2)
    assert lora.weight is qkv.weight and lora.bias is qkv.bias  # taken over: SAM's keys load unchanged
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(lora(x), qkv(x), atol=1e-2, rtol=0)  # small start
        lora.adapter_q_up.weight.fill_(0.5)
        lora.adapter_v_up.weight.fill_(0.5)
        base, out = qkv(x), lora(x)
    assert torch.equal(out[..., 8:16], base[..., 8:16])  # keys untouched
    assert not torch.allclose(out[..., :8], base[..., :8]) and not torch.allclose(out[..., 16:], base[..., 16:])
    with pytest.raises(ValueError, match="C -> 3C"):
        LoRAQueryValue(nn.Linear(8, 16))
    with pytest.raises(ValueError, match="rank"):
        LoRAQueryValue(nn.Linear(8, 24), rank=9)


def test_lora_encoder_loads_sams_weights_and_its_new_parameters_are_the_adapter_parameters() -> None:
    torch.manual_seed(0)
    plain = build_sam_vit(SMALL)
    adapted = add_lora(build_sam_vit(SMALL))
    new = {k for k in adapted.state_dict() if k not in plain.state_dict()}
    assert new and all(is_adapter_parameter(k) and ".attn.qkv.adapter_" in k for k in new)
    assert set(plain.state_dict()) <= set(adapted.state_dict())
    load_vit_weights(adapted, plain.state_dict())  # the LoRA tensors may be missing from a SAM checkpoint
    assert torch.equal(adapted.blocks[0].attn.qkv.weight, plain.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(adapted)


def test_levels_are_the_tapped_blocks_and_the_embedding_is_the_encoders() -> None:
    torch.manual_seed(0)
    encoder = build_sam_vit(SMALL).eval()
    images = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        embedding, levels = encode_with_levels(encoder, images, (0, 1))
        torch.testing.assert_close(embedding, encoder(images))
    assert [tuple(level.shape) for level in levels] == [(1, 64, 16, 16)] * 2
    assert level_taps(VIT_B) == (2, 5, 8) and level_taps(SMALL) == (1,)
    assert level_taps(ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))) == (0,)
    with pytest.raises(ValueError, match="outside"):
        encode_with_levels(encoder, images, (3,))
