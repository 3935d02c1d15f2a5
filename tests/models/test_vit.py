"""SAM ViT at 256 input and loading 1024-trained weights (segsam.models.vit, build)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.build import build_model, load_sam_weights
from segsam.models.litemedsam import PairedMaskDecoder
from segsam.models.sam_compat import PromptEncoder, Sam, TwoWayTransformer
from segsam.models.segsam_net import PromptableModel
from segsam.models.stand_in import official_sam
from segsam.models.vit import VIT_B, ViTGeometry, build_sam_vit, load_vit_weights, resize_vit_state
from segsam.models.weights import WeightsError

# ViT-B width, heads, patch and window; two blocks (one windowed, one global) keep CPU time low.
# Keys stay those of the official checkpoint: image_encoder.blocks.{0,1}.*, prompt_encoder.*, mask_decoder.*.
DEPTH, GLOBAL = 2, (1,)
GEOMETRY_256 = ViTGeometry(depth=DEPTH, global_attn_indexes=GLOBAL)
GEOMETRY_1024 = ViTGeometry(image_size=1024, depth=DEPTH, global_attn_indexes=GLOBAL)


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory) -> tuple[Sam, Path]:
    torch.manual_seed(0)
    sam = official_sam(DEPTH, GLOBAL)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def test_checkpoint_has_the_official_layout(sam_checkpoint):
    _, path = sam_checkpoint
    state = torch.load(path, weights_only=True)
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    assert state["image_encoder.blocks.1.attn.rel_pos_h"].shape == (127, 64)  # global block
    assert state["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)  # windowed block
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}


def test_geometry_defaults_and_validation():
    assert VIT_B.embedding_size == 16 and VIT_B.depth == 12 and VIT_B.global_attn_indexes == (2, 5, 8, 11)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTGeometry(image_size=250)
    with pytest.raises(ValueError, match="does not divide"):
        ViTGeometry(num_heads=7)
    with pytest.raises(ValueError, match="outside"):
        ViTGeometry(depth=2, global_attn_indexes=(5,))
    with pytest.raises(ValueError, match="positive"):
        ViTGeometry(depth=0, global_attn_indexes=())


def test_1024_load_without_resizing_reproduces_sam_exactly(sam_checkpoint):
    sam, path = sam_checkpoint
    model = PromptableModel(
        num_classes=3,
        image_encoder=build_sam_vit(GEOMETRY_1024),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=PairedMaskDecoder(
            transformer_dim=256,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        image_size=1024,
    ).eval()
    assert load_sam_weights(model, path, encoder="vit_b") == []  # nothing resized at 1024
    image = torch.randn(1, 3, 1024, 1024)
    boxes = torch.tensor([[100.0, 200.0, 600.0, 700.0], [0.0, 0.0, 1023.0, 1023.0]])
    point = torch.tensor([[[512.0, 300.0]]])
    with torch.inference_mode():
        ours = model.encode(image)
        theirs = sam.image_encoder(image)
        assert torch.equal(ours, theirs)
        out = model(
            ours.expand(3, -1, -1, -1),
            torch.tensor([False, True, False]),
            torch.cat([boxes[:1], boxes[:1] * 0, boxes[1:]]),
            torch.tensor([[0.0, 0.0], [512.0, 300.0], [0.0, 0.0]]),
        )
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        box_masks, box_iou = sam.mask_decoder(
            theirs, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
        sparse, dense = sam.prompt_encoder(points=(point, torch.ones(1, 1, dtype=torch.int64)), boxes=None, masks=None)
        pt_masks, pt_iou = sam.mask_decoder(
            theirs, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
    expected = torch.cat([box_masks[:1], pt_masks, box_masks[1:]])
    expected = F.interpolate(expected, size=(1024, 1024), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.masks, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.iou, torch.cat([box_iou[:1], pt_iou, box_iou[1:]]), rtol=0, atol=1e-6)


def test_256_builder_resizes_position_tensors(sam_checkpoint):
    sam, path = sam_checkpoint
    model = build_model("sam", encoder_weights=path, num_classes=3, text_dim=None, vit_geometry=GEOMETRY_256)
    encoder, original = model.image_encoder, sam.image_encoder
    assert encoder.pos_embed.shape == (1, 16, 16, 768)
    expected_pos = F.interpolate(
        original.pos_embed.permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(encoder.pos_embed, expected_pos.permute(0, 2, 3, 1), rtol=0, atol=0)
    # global block: 127 -> 31 rows, linear along the table; windowed block: unchanged (window 14)
    assert encoder.blocks[1].attn.rel_pos_h.shape == (31, 64)
    expected_rel = F.interpolate(original.blocks[1].attn.rel_pos_w.t()[None], size=31, mode="linear")[0].t()
    torch.testing.assert_close(encoder.blocks[1].attn.rel_pos_w, expected_rel, rtol=0, atol=0)
    assert torch.equal(encoder.blocks[0].attn.rel_pos_h, original.blocks[0].attn.rel_pos_h)
    assert torch.equal(encoder.blocks[0].mlp.lin1.weight, original.blocks[0].mlp.lin1.weight)
    for part in ("prompt_encoder", "mask_decoder"):
        ours, theirs = getattr(model, part).state_dict(), getattr(sam, part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    with torch.inference_mode():
        embedding = model.encode(torch.rand(1, 3, 256, 256))
    assert embedding.shape == (1, 256, 16, 16) and torch.isfinite(embedding).all()


def test_resized_rel_pos_equals_sams_own_runtime_interpolation(sam_checkpoint):
    """SAM interpolates a misfitting table linearly on the fly; our resized table must give the same output."""
    sam, _ = sam_checkpoint
    state = {k: v for k, v in sam.image_encoder.state_dict().items()}
    ours = build_sam_vit(GEOMETRY_256).eval()
    resized = load_vit_weights(ours, state)
    assert sorted(resized) == ["blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w", "pos_embed"]
    reference = build_sam_vit(GEOMETRY_256).eval()
    fitted, _ = resize_vit_state(state, reference)
    keep = {k: fitted[k] for k in fitted if not k.startswith("blocks.1.attn.rel_pos")}
    reference.load_state_dict(keep, strict=False)
    reference.blocks[1].attn.rel_pos_h = nn.Parameter(state["blocks.1.attn.rel_pos_h"].clone())  # 127 rows
    reference.blocks[1].attn.rel_pos_w = nn.Parameter(state["blocks.1.attn.rel_pos_w"].clone())
    image = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        torch.testing.assert_close(ours(image), reference(image), rtol=0, atol=1e-6)


def test_mismatching_weights_are_reported(sam_checkpoint, tmp_path):
    sam, path = sam_checkpoint
    state = sam.image_encoder.state_dict()
    del state["blocks.0.mlp.lin1.weight"]
    with pytest.raises(RuntimeError, match="missing"):
        load_vit_weights(build_sam_vit(GEOMETRY_256), state)
    with pytest.raises(WeightsError, match="image_encoder weights do not fit the vit_b model"):
        build_model(
            "sam",
            encoder_weights=path,
            num_classes=3,
            text_dim=None,
            vit_geometry=ViTGeometry(depth=3, global_attn_indexes=(1,)),
        )
    with pytest.raises(WeightsError, match="tiny_vit"):
        build_model("ft_decoder", encoder_weights=path, num_classes=3, text_dim=None)
    extra = tmp_path / "extra.pth"
    torch.save({**torch.load(path, weights_only=True), "head.weight": torch.zeros(1)}, extra)
    with pytest.raises(WeightsError, match="keys outside"):
        build_model("sam", encoder_weights=extra, num_classes=3, text_dim=None, vit_geometry=GEOMETRY_256)
