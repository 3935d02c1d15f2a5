"""build_model with the real LiteMedSAM checkpoint, and its options (segsam.models.build)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segsam.errors import ConfigError
from segsam.methods import get_method
from segsam.models.adapters import is_adapter_parameter
from segsam.models.build import build_image_encoder, build_model, with_backbone
from segsam.models.litemedsam import build_litemedsam
from segsam.models.vit import ViTGeometry
from segsam.models.weights import LITEMEDSAM_SHA256, WeightsError, load_state_dict, resolve_weights

C, TEXT = 8, 384
SMALL_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return resolve_weights("litemedsam", LITEMEDSAM_SHA256)


@pytest.fixture(scope="module")
def segsam(checkpoint):
    torch.manual_seed(0)
    return build_model("segsam", encoder_weights=checkpoint, num_classes=C, text_dim=TEXT)


def _image() -> torch.Tensor:
    """A bright disk on a dark background, 256 x 256, values in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    disk = (((yy - 120) ** 2 + (xx - 100) ** 2) < 40**2).float()
    return (0.1 + 0.8 * disk).expand(1, 3, 256, 256).contiguous()


def test_segsam_loads_litemedsam_and_starts_sawd_from_sagd(segsam, checkpoint):
    state = load_state_dict(checkpoint)
    ours = segsam.state_dict()
    for key, value in state.items():
        assert torch.equal(ours[key], value), key
    sagd, sawd = segsam.mask_decoder, segsam.sawd
    for key, value in sagd.transformer.state_dict().items():
        assert torch.equal(sawd.transformer.state_dict()[key], value), key
    for key, value in sagd.output_upscaling.state_dict().items():
        assert torch.equal(sawd.output_upscaling.state_dict()[key], value), key
    for key, value in sagd.output_hypernetworks_mlps[0].state_dict().items():
        assert torch.equal(sawd.mask_hypernet.state_dict()[key], value), key
    assert torch.equal(sawd.so_token.weight, sagd.mask_tokens.weight[:1])  # the SO-token starts as mask token 0
    assert not segsam.training


def test_segsam_forward_with_the_real_checkpoint(segsam):
    text = torch.randn(C, TEXT)
    with torch.inference_mode():
        embedding = segsam.encode(_image())
        assert embedding.shape == (1, 256, 64, 64)
        out = segsam(
            embedding.expand(3, -1, -1, -1),
            torch.tensor([False, True, False]),
            torch.tensor([[55.0, 75.0, 145.0, 165.0], [0, 0, 0, 0], [10.0, 10.0, 60.0, 50.0]]),
            torch.tensor([[0.0, 0.0], [100.0, 120.0], [0.0, 0.0]]),
            text,
        )
    assert out.masks.shape == out.sem_masks.shape == (3, 1, 256, 256)
    assert out.class_logits.shape == out.presence_logits.shape == (3, C)
    for field in ("masks", "iou", "sem_masks", "class_logits", "presence_logits"):
        assert torch.isfinite(getattr(out, field)).all(), field


def test_ft_decoder_reproduces_litemedsam_on_a_mixed_batch(checkpoint):
    model = build_model("ft_decoder", encoder_weights=checkpoint, num_classes=C, text_dim=None)
    reference = build_litemedsam(checkpoint)
    boxes = torch.tensor([[55.0, 75.0, 145.0, 165.0], [0, 0, 0, 0], [30.0, 20.0, 200.0, 210.0]])
    points = torch.tensor([[0.0, 0.0], [100.0, 120.0], [0.0, 0.0]])
    with torch.inference_mode():
        embedding = reference.encode(_image())
        torch.testing.assert_close(model.encode(_image()), embedding, rtol=0, atol=0)
        out = model(embedding.expand(3, -1, -1, -1), torch.tensor([False, True, False]), boxes, points)
        box_masks, box_iou = reference.decode(embedding.expand(2, -1, -1, -1), boxes=boxes[[0, 2]])
        pt_masks, pt_iou = reference.decode(embedding, points=(points[1:2, None], torch.ones(1, 1, dtype=torch.int64)))
    torch.testing.assert_close(
        out.masks, torch.cat([box_masks[:1], pt_masks, box_masks[1:]]), rtol=1e-4, atol=1e-4
    )  # batch-size dependent float sums
    torch.testing.assert_close(out.iou, torch.cat([box_iou[:1], pt_iou, box_iou[1:]]), rtol=1e-4, atol=1e-5)
    inside = out.masks[0, 0] > 0  # the box around the disk segments (most of) the disk
    disk = _image()[0, 0] > 0.5
    dice = 2 * (inside & disk).sum() / (inside.sum() + disk.sum())
    assert dice > 0.8


def test_frozen_encoder_can_be_left_out(checkpoint):
    lean = build_model("segsam", encoder_weights=checkpoint, num_classes=C, text_dim=TEXT, with_image_encoder=False)
    assert lean.image_encoder is None
    medsam = build_model(
        "medsam", encoder_weights=None, num_classes=C, text_dim=None, vit_geometry=SMALL_VIT, with_image_encoder=False
    )
    assert medsam.image_encoder is not None  # its encoder trains, so it is always built


def test_build_errors():
    with pytest.raises(ConfigError, match="unknown method 'segsam_xl'"):
        build_model("segsam_xl", encoder_weights=None, num_classes=C, text_dim=TEXT)
    with pytest.raises(ValueError, match="pass text_dim"):
        build_model("t2vse", encoder_weights=None, num_classes=C, text_dim=None, with_image_encoder=False)
    with pytest.raises(ValueError, match="vit_geometry applies to vit_b methods"):
        build_model("segsam", encoder_weights=None, num_classes=C, text_dim=TEXT, vit_geometry=SMALL_VIT)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("ft_decoder", encoder_weights=None, num_classes=0, text_dim=None)


def test_segsam_on_the_papers_backbone():
    """SEG-SAM on SAM ViT-B + SAM-Med2D adapters (the paper's set-up), via a modified spec."""
    spec = with_backbone(get_method("segsam"), "vit_b", "sam_med2d")
    assert spec.name == "segsam@vit_b+sam_med2d" and not spec.encoder_frozen
    model = build_model(spec, encoder_weights=None, num_classes=C, text_dim=TEXT, vit_geometry=SMALL_VIT)
    encoder_trainable = {n for n, p in model.image_encoder.named_parameters() if p.requires_grad}
    assert encoder_trainable and all(is_adapter_parameter(n) for n in encoder_trainable)
    assert all(p.requires_grad for p in model.sawd.parameters())
    with pytest.raises(ValueError, match="prompt-free"):
        with_backbone(get_method("unet"), "vit_b")


def test_build_image_encoder_loads_the_encoder_part_only(checkpoint, tmp_path):
    encoder = build_image_encoder("tiny_vit", checkpoint)
    reference = build_litemedsam(checkpoint).image_encoder
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    image = _image()
    with torch.inference_mode():
        torch.testing.assert_close(encoder(image), reference(image))
    no_encoder = tmp_path / "decoder_only.pth"
    torch.save({k: v for k, v in load_state_dict(checkpoint).items() if not k.startswith("image_encoder.")}, no_encoder)
    with pytest.raises(WeightsError, match="decoder_only.pth: no image_encoder"):
        build_image_encoder("tiny_vit", no_encoder)
    with pytest.raises(WeightsError, match="do not fit the vit_b model"):
        build_image_encoder("vit_b", checkpoint)  # TinyViT tensors are not a ViT-B
    with pytest.raises(ValueError, match="unknown encoder"):
        build_image_encoder("vit_h", checkpoint)
