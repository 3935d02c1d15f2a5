"""Every registered method builds and trains what it says (segsam.methods + build)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segsam.methods import METHODS, MethodSpec
from segsam.models.build import build_model
from segsam.models.losses import MethodLoss, PromptFreeLoss
from segsam.models.vit import ViTGeometry

REPO = Path(__file__).resolve().parents[2]
C, TEXT = 5, 384
# ViT-B methods run on a narrow, 2-block ViT (same code path, 16 x 16 embedding) to keep CPU time low.
SMALL_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))

# Parameters that receive no gradient in this training regime (single-mask output, foreground
# points or boxes, no mask prompts): SAM's own structure, not something SEG-SAM adds.
NEVER_USED = (
    "prompt_encoder.mask_downscaling.",  # mask prompts
    "prompt_encoder.point_embeddings.0.",  # background (label 0) points
    "mask_decoder.output_hypernetworks_mlps.1.",  # multimask outputs 1..3
    "mask_decoder.output_hypernetworks_mlps.2.",
    "mask_decoder.output_hypernetworks_mlps.3.",
)
NEVER_USED_SUFFIX = (".norm_cross_attn.weight", ".norm_cross_attn.bias")  # MONAI UNETR blocks without cross-attention

EXPECTED = {
    "medsam_lite", "ft_decoder", "sam", "ft_sam", "sam_med2d", "medsam", "med_sa", "segsam", "segsam_vit_b",
    "ft_sam+sawd", "sam_med2d+sawd", "medsam+sawd", "med_sa+sawd",
    "sawd_pmt", "sawd_unpmt", "sawd_sem", "t2vse", "t2vse_v1", "cmsa", "unet", "unetr",
    "pg_sam", "pg_sam_no_text", "pg_sam_no_mlff", "pg_sam_k1", "pg_sam_vit_b",
}  # fmt: skip
PG_SAM_CACHED = {"pg_sam", "pg_sam_no_text", "pg_sam_no_mlff", "pg_sam_k1"}  # frozen LiteMedSAM: the embedding cache


def _unused(name: str) -> bool:
    return name.startswith(NEVER_USED) or name.endswith(NEVER_USED_SUFFIX)


def test_registry_holds_the_paper_rows():
    assert set(METHODS) == EXPECTED


def test_registry_module_does_not_import_torch():
    code = "import sys, segsam.methods as m; assert m.METHODS; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True, cwd=REPO
    )
    assert result.stdout.strip() == "False"


def test_components_follow_the_papers_ablation_rows():
    def parts(name: str) -> set[str]:
        return set(METHODS[name].components)

    assert parts("sawd_pmt") == {"sawd_pmt"}
    assert parts("sawd_unpmt") == {"sawd_pmt", "sawd_unpmt"}
    assert parts("sawd_sem") == {"sawd_pmt", "sawd_sem"}
    assert parts("t2vse") == {"sawd_pmt", "sawd_unpmt", "t2vse"}
    assert parts("t2vse_v1") == {"sawd_pmt", "sawd_unpmt", "t2vse", "t2vse_v1"}
    assert parts("cmsa") == parts("segsam") == {"sawd_pmt", "sawd_unpmt", "t2vse", "cmsa"}
    for base in ("ft_sam", "sam_med2d", "medsam", "med_sa"):
        plugged = METHODS[f"{base}+sawd"]
        assert set(plugged.trainable) == set(METHODS[base].trainable) | {"sawd"}
        assert plugged.adapter == METHODS[base].adapter and plugged.encoder == "vit_b"
        assert parts(f"{base}+sawd") == {"sawd_pmt", "sawd_unpmt"}
    assert METHODS["sam_med2d"].adapter == "sam_med2d" and METHODS["med_sa"].adapter == "med_sa"
    assert "image_encoder" in METHODS["medsam"].trainable and "prompt_encoder" not in METHODS["medsam"].trainable
    frozen = {name for name, spec in METHODS.items() if spec.encoder_frozen}
    assert frozen == {
        "medsam_lite",
        "ft_decoder",
        "sam",
        "ft_sam",
        "ft_sam+sawd",
        "segsam",
        "sawd_pmt",
        "sawd_unpmt",
        "sawd_sem",
        "t2vse",
        "t2vse_v1",
        "cmsa",
        *PG_SAM_CACHED,
    }
    assert {name for name, spec in METHODS.items() if spec.prompt_free} == {"unet", "unetr"}
    assert {name for name, spec in METHODS.items() if not spec.prompted} == {
        "unet",
        "unetr",
        *PG_SAM_CACHED,
        "pg_sam_vit_b",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoder": "vit_h"}, "unknown encoder"),
        ({"encoder": "tiny_vit", "adapter": "sam_med2d"}, "adapters need the vit_b encoder"),
        ({"encoder": "vit_b", "adapter": "lora"}, "unknown adapter"),
        (
            {"components": ("sawd_pmt", "sawd_unpmt", "sawd_sem"), "trainable": ("sawd",)},
            "sawd_sem replaces sawd_unpmt",
        ),
        ({"components": ("sawd_pmt", "t2vse_v1"), "trainable": ("sawd",)}, "needs t2vse and sawd_pmt"),
        ({"components": ("sawd_unpmt", "cmsa"), "trainable": ("sawd",)}, "needs sawd_pmt"),
        ({"components": ("sawd_pmt",), "trainable": ("mask_decoder",)}, "'sawd' must train"),
        ({"components": ("sawd_pmt", "t2vse"), "trainable": ("sawd",)}, "'t2vse' must train"),
        ({"trainable": ("decoder",)}, "unknown trainable"),
        ({"trains": False}, "trains=False"),
        ({"network": "unet"}, "no encoder"),
        ({"encoder": None, "network": "nnformer"}, "unknown network"),
        ({"components": ("sam",)}, "unknown components"),
    ],
)
def test_spec_validation(fields, message):
    base = {"name": "x", "display": "x", "trains": True, "trainable": ("mask_decoder",), "description": "x"}
    with pytest.raises(ValueError, match=message):
        MethodSpec(**{**base, **fields})


def _batch(spec: MethodSpec, model):
    """Two images, one prompt each: a point on image 0, a box on image 1 (kept small for CPU time)."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 256, 256, generator=g)
    masks = torch.zeros(2, 1, 256, 256)
    masks[0, :, 60:130, 50:100] = 1
    masks[1, :, 30:200, 100:220] = 1
    if spec.prompt_free:  # one image is enough to reach every parameter
        return images[:1], (masks[:1, 0] * 3).long()
    if spec.pg_sam is not None:  # cached embeddings (LiteMedSAM) or images through ViT-B + LoRA, and the class text
        inputs = torch.randn(2, 256, 64, 64, generator=g) if spec.encoder == "tiny_vit" else images
        return inputs, (masks[:, 0] * 3).long(), torch.randn(C, TEXT, generator=g)
    if spec.encoder == "tiny_vit":
        embeddings = torch.randn(2, 256, *model.embedding_size, generator=g)  # as from the embedding cache
    else:
        embeddings = model.encode(images)  # gradients reach adapters / the encoder where they train
    return dict(
        embeddings=embeddings,
        is_point=torch.tensor([True, False]),
        boxes=torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 30.0, 220.0, 200.0]]),
        points=torch.tensor([[70.0, 90.0], [0.0, 0.0]]),
        text=torch.randn(C, TEXT, generator=g),
        masks=masks,
        classes=torch.tensor([1, 3]),
        presence=torch.tensor([[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]),
        class_masks=masks.expand(-1, C, -1, -1) * (torch.arange(C) == 1).float()[None, :, None, None],
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_one_adam_step_changes_exactly_what_trains(name):
    spec = METHODS[name]
    torch.manual_seed(0)
    model = build_model(
        name,
        encoder_weights=None,
        num_classes=C,
        text_dim=TEXT,
        vit_geometry=SMALL_VIT if spec.encoder == "vit_b" else None,
        with_image_encoder=spec.encoder != "tiny_vit",  # LiteMedSAM methods train from the embedding cache
    ).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not spec.trains:
        assert not trainable
        return
    for top in spec.trainable:
        assert all(p.requires_grad for p in getattr(model, top).parameters()), top
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.Adam(trainable, lr=1e-3, foreach=True)
    batch = _batch(spec, model)
    if spec.prompt_free:
        images, labels = batch
        terms = PromptFreeLoss()(model(images), labels)
    elif spec.pg_sam is not None:
        inputs, labels, text = batch
        terms = PromptFreeLoss()(model(inputs, text), labels)
    else:
        out = model(batch["embeddings"], batch["is_point"], batch["boxes"], batch["points"], batch["text"])
        loss = MethodLoss.for_model(model)
        terms = loss(out, batch["masks"], batch["classes"], batch["presence"], class_masks=batch["class_masks"])
    assert torch.isfinite(terms["loss"])
    optimiser.zero_grad()
    terms["loss"].backward()
    optimiser.step()
    unchanged_trainable = []
    for n, p in model.named_parameters():
        same = torch.equal(p.detach(), before[n])
        if not p.requires_grad:
            assert same, f"frozen parameter {n} changed"
        elif same and not _unused(n):
            unchanged_trainable.append(n)
    assert not unchanged_trainable, f"trainable parameters did not change: {unchanged_trainable[:10]}"


@pytest.mark.slow
def test_methods_table_lists_every_method():
    from segsam.cli import methods_table

    table = methods_table(num_classes=C)
    for name in METHODS:
        assert f"| `{name}` |" in table
