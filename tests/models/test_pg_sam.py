"""PG-SAM (segsam.models.pg_sam and its parts, built by segsam.models.build): shapes, switches, training, weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from segsam.methods import METHODS, MethodSpec, PGSamParts, get_method
from segsam.models.build import build_model, build_pg_sam
from segsam.models.level_fusion import MultiLevelFusion
from segsam.models.level_pyramid import EmbeddingPyramid
from segsam.models.losses import PromptFreeLoss, SemanticLoss
from segsam.models.mask_optimiser import IterativeMaskOptimiser
from segsam.models.pg_decoder import PriorGuidedDecoder
from segsam.models.pg_sam import PGSam
from segsam.models.prior_aligner import PriorAligner
from segsam.models.sam_compat import TwoWayTransformer
from segsam.models.segsam_net import ModelOutput
from segsam.models.vit import VIT_B, ViTGeometry
from segsam.models.weights import LITEMEDSAM_SHA256, load_state_dict, resolve_weights

C, TEXT = 5, 384
SMALL_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))
CACHED = ["pg_sam", "pg_sam_no_text", "pg_sam_no_mlff", "pg_sam_k1"]


def _build(name: str, **kwargs) -> PGSam:
    torch.manual_seed(0)
    spec = get_method(name)
    kwargs.setdefault("with_image_encoder", False)
    if spec.encoder == "vit_b":
        kwargs.setdefault("vit_geometry", SMALL_VIT)
    return build_model(name, encoder_weights=None, num_classes=C, text_dim=TEXT, **kwargs)


def _names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 256, 64, 64, generator=g), torch.randn(C, TEXT, generator=g)


@pytest.mark.parametrize("name", CACHED)
def test_cached_variants_give_c_plus_1_channels_at_256(name: str) -> None:
    model = _build(name)
    embeddings, text = _inputs()
    with torch.inference_mode():
        out = model(embeddings, text)
    assert isinstance(out, ModelOutput) and out.masks is None and out.iou is None
    assert out.semantic.shape == (2, C + 1, 256, 256) and out.semantic_rounds is None  # eval: the last round only
    rounds = METHODS[name].pg_sam.rounds
    model.train()
    out = model(embeddings, text)
    if rounds == 1:
        assert out.semantic_rounds is None
    else:
        assert out.semantic_rounds.shape == (2, rounds - 1, C + 1, 256, 256)


def test_each_switch_removes_exactly_its_part() -> None:
    full = _names(_build("pg_sam"))
    no_text = _names(_build("pg_sam_no_text"))
    assert full - no_text == {n for n in full if n.startswith("prior_aligner.text_proj.")} != set()
    assert no_text - full == {"prior_aligner.class_queries.weight"}  # learned queries take the text's place
    no_mlff = _names(_build("pg_sam_no_mlff"))
    assert full - no_mlff == {n for n in full if n.startswith("level_fusion.")} != set() and no_mlff <= full
    k1 = _build("pg_sam_k1")
    assert full - _names(k1) == {n for n in full if n.startswith("mask_optimiser.")} != set() and _names(k1) <= full
    assert k1.mask_optimiser is None and k1.rounds == 1


def test_text_priors_read_the_class_text_and_the_ablation_ignores_it() -> None:
    embeddings, text = _inputs(1)
    with pytest.raises(ValueError, match="class text embeddings"):
        _build("pg_sam")(embeddings, None)
    with pytest.raises(ValueError, match=f"{C} x {TEXT}"):
        _build("pg_sam")(embeddings, text[:, :10])
    model = _build("pg_sam_no_text")
    with torch.inference_mode():
        assert torch.equal(model(embeddings, None).semantic, model(embeddings, text).semantic)
        full = _build("pg_sam")
        other = full(embeddings, torch.randn(C, TEXT)).semantic
        assert not torch.equal(full(embeddings, text).semantic, other)


def test_one_step_trains_the_pg_sam_modules_and_leaves_the_frozen_tinyvit_alone() -> None:
    """With its encoder built (prediction, or training from images), TinyViT stays frozen and in eval mode."""
    model = _build("pg_sam", with_image_encoder=True).train()
    assert not model.image_encoder.training  # batch norm statistics do not move
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=1e-3)
    images = torch.rand(1, 3, 256, 256)
    labels = torch.zeros(1, 256, 256, dtype=torch.long)
    labels[0, 40:120, 60:150] = 2
    terms = PromptFreeLoss()(model(images, torch.randn(C, TEXT)), labels)
    terms["loss"].backward()
    optimiser.step()
    after = model.state_dict()
    for name, value in after.items():
        if name.startswith("image_encoder."):
            assert torch.equal(before[name], value), f"frozen encoder tensor {name} changed"
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], after[n])}
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in changed} == set(get_method("pg_sam").trainable)


def test_vit_b_variant_reads_the_images_through_lora_and_its_levels() -> None:
    model = _build("pg_sam_vit_b")
    assert model.encoder_taps == (0,) and model.level_fusion.pyramid is None
    images = torch.rand(2, 3, 256, 256)
    text = torch.randn(C, TEXT)
    with torch.inference_mode():
        assert model(images, text).semantic.shape == (2, C + 1, 256, 256)  # 64 x 64 logits resized to 256
    with pytest.raises(ValueError, match="pass images"):
        model(torch.randn(2, 256, 16, 16), text)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("image_encoder.")}
    assert trainable and all(".attn.qkv.adapter_" in n for n in trainable)


def test_vit_b_builds_the_papers_three_levels() -> None:
    spec = get_method("pg_sam_vit_b")
    model = build_pg_sam(spec, C, TEXT, VIT_B, with_image_encoder=True)
    assert model.encoder_taps == (2, 5, 8)
    assert model.level_fusion.level_channels == (768, 768, 768)
    assert model.semantic_decoder.embedding_size == 16


def test_the_decoder_starts_from_sams_weights() -> None:
    """LiteMedSAM's two-way transformer, upscaling, first hypernetwork MLP and positional encoding load unchanged."""
    path = resolve_weights("litemedsam", LITEMEDSAM_SHA256)
    state = load_state_dict(path)
    torch.manual_seed(0)
    model = build_model("pg_sam", encoder_weights=path, num_classes=C, text_dim=TEXT, with_image_encoder=False)
    mine = model.state_dict()
    pairs = {
        "semantic_decoder.transformer.": "mask_decoder.transformer.",
        "semantic_decoder.output_upscaling.": "mask_decoder.output_upscaling.",
        "semantic_decoder.hypernetwork.": "mask_decoder.output_hypernetworks_mlps.0.",
        "semantic_decoder.pe_layer.": "prompt_encoder.pe_layer.",
    }
    loaded = 0
    for target, source in pairs.items():
        for key, value in mine.items():
            if key.startswith(target):
                assert torch.equal(value, state[source + key[len(target) :]]), key
                loaded += 1
    assert loaded > 20 and model.image_encoder is None
    torch.manual_seed(0)
    random = build_model("pg_sam", encoder_weights=None, num_classes=C, text_dim=TEXT, with_image_encoder=False)
    assert torch.equal(random.state_dict()["prior_aligner.token_key.weight"], mine["prior_aligner.token_key.weight"])


def test_the_loss_averages_the_rounds() -> None:
    logits = torch.randn(2, C + 1, 32, 32)
    earlier = torch.randn(2, 2, C + 1, 32, 32)
    labels = torch.randint(0, C + 1, (2, 32, 32))
    terms = PromptFreeLoss()(ModelOutput(masks=None, iou=None, semantic=logits, semantic_rounds=earlier), labels)
    each = [SemanticLoss()(x, labels)["loss"] for x in (earlier[:, 0], earlier[:, 1], logits)]
    torch.testing.assert_close(terms["loss"], torch.stack(each).mean())
    torch.testing.assert_close(terms["last_round"], each[-1])


def test_parts_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        PriorAligner(0)
    with pytest.raises(ValueError, match="text_dim"):
        PriorAligner(3, text_dim=0)
    with pytest.raises(ValueError, match="expected image embeddings"):
        PriorAligner(3, text_dim=None)(torch.randn(1, 128, 8, 8), torch.randn(1, 256, 8, 8))
    with pytest.raises(ValueError, match="at least one level"):
        MultiLevelFusion([])
    with pytest.raises(ValueError, match="the pyramid makes"):
        MultiLevelFusion([64], pyramid=EmbeddingPyramid(256, 128, 2))
    assert MultiLevelFusion([64]).level_logits is None  # one level: nothing to weigh
    with pytest.raises(ValueError, match="divisible by 4"):
        EmbeddingPyramid(256, 128, 2)(torch.randn(1, 256, 10, 10))
    with pytest.raises(ValueError, match="multiple of 16"):
        IterativeMaskOptimiser(3, embed_dim=24)
    with pytest.raises(ValueError, match="expected logits"):
        IterativeMaskOptimiser(3)(torch.randn(1, 4, 32, 32), torch.randn(1, 256, 16, 16))
    decoder = PriorGuidedDecoder(3, TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=512, num_heads=8), 256, 16)
    with pytest.raises(ValueError, match="expected embeddings"):
        decoder(torch.randn(1, 256, 8, 8), decoder.dense_pe(), torch.randn(1, 3, 256), torch.randn(1, 256, 8, 8))


def test_the_model_checks_that_its_parts_fit() -> None:
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=512, num_heads=8)
    parts = {"prior_aligner": PriorAligner(3), "semantic_decoder": PriorGuidedDecoder(3, transformer, 256, 16)}
    with pytest.raises(ValueError, match="mask optimiser"):
        PGSam(num_classes=3, rounds=2, **parts)
    with pytest.raises(ValueError, match="mask optimiser"):
        PGSam(num_classes=3, rounds=1, mask_optimiser=IterativeMaskOptimiser(3), **parts)
    with pytest.raises(ValueError, match="3 classes"):
        PGSam(num_classes=3, rounds=2, mask_optimiser=IterativeMaskOptimiser(4), **parts)
    with pytest.raises(ValueError, match="encoder taps"):
        PGSam(num_classes=3, encoder_taps=(0,), level_fusion=MultiLevelFusion([64]), **parts)
    with pytest.raises(ValueError, match="encoder_taps"):
        PGSam(num_classes=3, level_fusion=MultiLevelFusion([64]), **parts)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"components": ("sawd_pmt",), "trainable": (*PGSamParts().modules, "sawd")}, "no SEG-SAM components"),
        ({"encoder": "vit_b", "adapter": "sam_med2d"}, "LoRA"),
        ({"trainable": ("prior_aligner", "semantic_decoder")}, "trains"),
        ({"trainable": (*PGSamParts().modules, "mask_decoder")}, "no \\['mask_decoder'\\]"),
        ({"pg_sam": None}, "PG-SAM modules"),
        ({"pg_sam": PGSamParts(rounds=1)}, "trains"),
    ],
)
def test_registry_checks_pg_sam_specs(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(get_method("pg_sam"), **fields)


def test_registry_entries_of_pg_sam() -> None:
    assert PGSamParts().names == ("text_prior", "mlff", "imo(K=3)")
    with pytest.raises(ValueError, match="at least one decoding round"):
        PGSamParts(rounds=0)
    for name in (*CACHED, "pg_sam_vit_b"):
        spec = METHODS[name]
        assert not spec.prompted and not spec.prompt_free and spec.trains
        assert set(spec.trainable) == set(spec.pg_sam.modules)
    assert get_method("pg_sam").encoder_frozen and get_method("pg_sam").needs_text
    assert not get_method("pg_sam_no_text").needs_text
    assert get_method("pg_sam_vit_b").adapter == "lora_qv" and not get_method("pg_sam_vit_b").encoder_frozen
    assert MethodSpec(name="x", display="x", trains=True, trainable=("mask_decoder",), description="x").prompted


@pytest.mark.slow
def test_vit_b_variant_loads_sams_checkpoint_and_keeps_its_lora(random_vit_b: tuple) -> None:
    """SAM ViT-B's official layout (the random stand-in) loads into PG-SAM on ViT-B; LoRA keeps its start."""
    path, _ = random_vit_b
    state = load_state_dict(path)
    model = build_model("pg_sam_vit_b", encoder_weights=path, num_classes=C, text_dim=TEXT)
    mine = model.state_dict()
    assert torch.equal(mine["image_encoder.blocks.3.attn.qkv.weight"], state["image_encoder.blocks.3.attn.qkv.weight"])
    assert torch.equal(
        mine["semantic_decoder.transformer.final_attn_token_to_image.q_proj.weight"],
        state["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"],
    )
    assert mine["image_encoder.pos_embed"].shape == (1, 16, 16, 768)  # resized from 1024 input
    lora = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("image_encoder.")}
    assert len(lora) == 12 * 4 and not any(n in state for n in lora)
