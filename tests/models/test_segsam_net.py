"""The assembled model (segsam.models.segsam_net.PromptableModel), random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segsam.methods import get_method
from segsam.models.build import build_model, with_backbone
from segsam.models.losses import MethodLoss, PromptFreeLoss
from segsam.models.segsam_net import ImageContext, ModelOutput, PromptableModel, Prompts
from segsam.models.vit import ViTGeometry

C, TEXT = 6, 384
SMALL_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))


def _build(method: str, *, small: bool = True, **kwargs) -> PromptableModel:
    """Random-weight model; ``small``: on a small ViT (16 x 16 embedding) to keep CPU time low."""
    torch.manual_seed(0)
    spec = get_method(method)
    kwargs.setdefault("with_image_encoder", False)
    if small and not spec.prompt_free:
        spec = spec if spec.encoder == "vit_b" else with_backbone(spec, "vit_b")
        kwargs.setdefault("vit_geometry", SMALL_VIT)
    return build_model(spec, encoder_weights=None, num_classes=C, text_dim=TEXT, **kwargs)


def _batch(hw: int = 16):
    """2 images x 3 prompted masks each, mixing points and boxes."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 256, hw, hw, generator=g)
    owner = torch.tensor([0, 0, 0, 1, 1, 1])
    is_point = torch.tensor([True, False, True, False, False, True])
    boxes = torch.tensor(
        [[0, 0, 0, 0], [30, 40, 120, 160], [0, 0, 0, 0], [5, 5, 250, 250], [100, 20, 140, 90], [0, 0, 0, 0]],
        dtype=torch.float32,
    )
    points = torch.tensor([[60, 70], [0, 0], [200, 30], [0, 0], [0, 0], [128, 128]], dtype=torch.float32)
    text = torch.randn(C, TEXT, generator=g)
    return images[owner], is_point, boxes, points, text


@pytest.fixture(scope="module")
def segsam() -> PromptableModel:
    return _build("segsam")


def test_mixed_prompt_batch_shapes():
    """The real geometry: LiteMedSAM's 64 x 64 embedding."""
    segsam = _build("segsam", small=False)
    embeddings, is_point, boxes, points, text = _batch(hw=64)
    with torch.inference_mode():
        out = segsam(embeddings, is_point, boxes, points, text)
    assert isinstance(out, ModelOutput)
    assert out.masks.shape == (6, 1, 256, 256) and out.iou.shape == (6, 1)
    assert out.sem_masks.shape == (6, 1, 256, 256)
    assert out.class_logits.shape == (6, C) and out.presence_logits.shape == (6, C)
    assert out.class_masks is None and out.semantic is None
    assert segsam.embedding_size == (64, 64) and segsam.embed_dim == 256


def test_mixed_batch_equals_one_prompt_at_a_time(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with torch.inference_mode():
        batch = segsam(embeddings, is_point, boxes, points, text)
        for i in range(len(is_point)):
            single = segsam(embeddings[i : i + 1], is_point[i : i + 1], boxes[i : i + 1], points[i : i + 1], text)
            for field in ("masks", "iou", "sem_masks", "class_logits", "presence_logits"):
                torch.testing.assert_close(getattr(single, field)[0], getattr(batch, field)[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["segsam", "sawd_sem", "t2vse_v1"])
def test_one_embedding_per_image_with_an_index_equals_one_per_prompt(method):
    """T2VSE and SAWD's unprompted branch run once per image: same outputs and gradients."""
    model = _build(method)
    g = torch.Generator().manual_seed(1)
    per_image = torch.randn(2, 256, 16, 16, generator=g)
    owner = torch.tensor([0, 0, 0, 1, 1, 1])
    _, is_point, boxes, points, text = _batch()
    outputs, grads = [], []
    for embeddings, index in ((per_image[owner], None), (per_image, owner.numpy())):
        model.zero_grad()
        out = model(embeddings, is_point, boxes, points, text, image_index=index)
        masks = torch.zeros(6, 1, 256, 256)
        masks[:, :, 40:140, 50:150] = 1
        class_masks = torch.zeros(6, C, 256, 256) if method == "sawd_sem" else None
        MethodLoss.for_model(model)(
            out, masks, torch.arange(6) % C, (torch.arange(C) < 2).float().expand(6, -1), class_masks=class_masks
        )["loss"].backward()
        outputs.append(out)
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    for field in ("masks", "iou", "sem_masks", "class_logits", "presence_logits", "class_masks"):
        a, b = getattr(outputs[0], field), getattr(outputs[1], field)
        assert (a is None) == (b is None), field
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and any(name.startswith("sawd.co_") for name in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-5, msg=name)


def _passes(model: PromptableModel, source, is_point, boxes, points, text, size: int) -> ModelOutput:
    """The prompts of one image decoded ``size`` at a time (as evaluation does), from embeddings or a context."""
    parts = [
        model(
            source,
            is_point[i : i + size],
            boxes[i : i + size],
            points[i : i + size],
            text,
            image_index=np.zeros(len(is_point[i : i + size]), np.int64),
        )
        for i in range(0, len(is_point), size)
    ]
    return ModelOutput.concatenate(parts)


@pytest.mark.parametrize("method", ["segsam", "sawd_sem", "t2vse_v1"])
def test_passes_sharing_an_image_context_equal_one_pass_per_prompt(method):
    """T2VSE's token and SAWD's unprompted branch, computed once per slice, serve every pass of its prompts."""
    model = _build(method).eval()
    g = torch.Generator().manual_seed(2)
    embedding = torch.randn(1, 256, 16, 16, generator=g)
    text = torch.randn(C, TEXT, generator=g)
    is_point = torch.arange(20) % 3 == 0
    corner = torch.rand(20, 2, generator=g) * 200
    boxes, points = torch.cat([corner, corner + 40], dim=1), corner + 20
    with torch.inference_mode():
        context = model.image_context(embedding, text)
        shared = _passes(model, context, is_point, boxes, points, None, 8)  # the context holds the text's token
        per_pass = _passes(model, embedding, is_point, boxes, points, text, 8)  # context recomputed in each pass
        single = [model(embedding, is_point[i : i + 1], boxes[i : i + 1], points[i : i + 1], text) for i in range(20)]
    single = ModelOutput.concatenate(single)
    assert (context.t2vse_token is None) == (model.t2vse is None) and context.sawd_unprompted is not None
    for field in ("masks", "iou", "sem_masks", "class_logits", "presence_logits", "class_masks"):
        a, b, c = getattr(shared, field), getattr(per_pass, field), getattr(single, field)
        assert (a is None) == (b is None) == (c is None), field
        if a is not None:
            assert torch.equal(a, b), field  # the same numbers as recomputing it
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4, msg=field)


@pytest.mark.parametrize("method", ["segsam", "sawd_sem", "t2vse_v1", "sawd_pmt"])
def test_semantic_decode_equals_forwards_sawd_outputs(method):
    """SAWD alone gives the numbers SAWD gives inside a full pass (its token and prior included)."""
    model = _build(method).eval()
    g = torch.Generator().manual_seed(3)
    embeddings = torch.randn(2, 256, 16, 16, generator=g)
    text = torch.randn(C, TEXT, generator=g)
    _, is_point, boxes, points, _ = _batch()
    index = np.array([0, 0, 0, 1, 1, 1])
    with torch.inference_mode():
        context = model.image_context(embeddings, text)
        full = model(context, is_point, boxes, points, image_index=index)
        alone = model.semantic_decode(context, is_point, boxes, points, index)
    torch.testing.assert_close(alone.class_logits, full.class_logits)
    torch.testing.assert_close(model._upsample(alone.mask), full.sem_masks)
    for field in ("presence_logits", "class_masks"):
        a, b = getattr(alone, field), getattr(full, field)
        assert (a is None) == (b is None), field
        if a is not None:
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no SAWD"):
        ft = _build("ft_decoder").eval()
        ft.semantic_decode(ft.image_context(embeddings), is_point, boxes, points, index)


def test_image_context_fields_and_validation(segsam):
    embeddings, *_, text = _batch()
    binary = segsam.image_context(embeddings[:2], text, semantic=False)
    assert isinstance(binary, ImageContext) and binary.sawd_unprompted is None
    assert binary.image_pe.shape == (1, 256, 16, 16) and binary.t2vse_token.shape == (2, 1, 256)
    assert _build("ft_decoder").image_context(embeddings[:2]).t2vse_token is None
    with pytest.raises(ValueError, match="class text embeddings"):
        segsam.image_context(embeddings[:2])
    with pytest.raises(ValueError, match="N x 256 x 16 x 16"):
        segsam.image_context(embeddings[:2, :, :8], text)
    with pytest.raises(ValueError, match="prompt-free"):
        _build("unet").image_context(embeddings[:2])


def test_prompts_coerce_numpy_to_typed_tensors():
    is_point = np.array([True, False, True])
    is_point.setflags(write=False)  # as pandas .to_numpy() gives
    prompts = Prompts.coerce(
        is_point,
        np.zeros((3, 4), np.float64),
        np.ones((3, 2), np.float32),
        images=2,
        device=torch.device("cpu"),
        image_index=np.array([0, 1, 1]),
        clicks=(np.zeros((3, 1, 2)), np.full((3, 1), -1)),
    )
    assert len(prompts) == 3 and prompts.is_point.dtype == torch.bool and prompts.boxes.dtype == torch.float32
    assert prompts.image_index.dtype == torch.int64 and prompts.clicks[1].dtype == torch.int64
    with pytest.raises(ValueError, match="no prompts"):
        Prompts.coerce(np.zeros(0, bool), np.zeros((0, 4)), np.zeros((0, 2)), images=1, device=torch.device("cpu"))


def test_image_index_validation(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with pytest.raises(ValueError, match="image index of 5 for 6 prompts"):
        segsam(embeddings[:2], is_point, boxes, points, text, image_index=np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"image index outside \[0, 2\)"):
        segsam(embeddings[:2], is_point, boxes, points, text, image_index=np.array([0, 0, 1, 1, 2, 2]))


def test_numpy_prompts_are_accepted(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with torch.inference_mode():
        a = segsam(embeddings, is_point, boxes, points, text)
        b = segsam(embeddings, is_point.numpy(), boxes.numpy(), points.numpy().astype(np.float64), text)
    torch.testing.assert_close(a.masks, b.masks)


def test_binary_only_inference_skips_sawd(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with torch.inference_mode():
        full = segsam(embeddings, is_point, boxes, points, text)
        binary = segsam(embeddings, is_point, boxes, points, text, semantic=False)
    torch.testing.assert_close(binary.masks, full.masks)
    assert binary.sem_masks is None and binary.class_logits is None and binary.presence_logits is None
    with pytest.raises(ValueError, match="no SAWD predictions"):
        MethodLoss.for_model(segsam)(
            binary, torch.zeros(6, 1, 256, 256), torch.zeros(6, dtype=torch.long), torch.zeros(6, C)
        )


def test_point_and_box_prompts_differ(segsam):
    embeddings, _, boxes, points, text = _batch()
    with torch.inference_mode():
        as_points = segsam(embeddings, torch.ones(6, dtype=torch.bool), boxes, points, text)
        as_boxes = segsam(embeddings, torch.zeros(6, dtype=torch.bool), boxes, points, text)
    assert not torch.allclose(as_points.masks, as_boxes.masks)


def test_corrective_clicks(segsam):
    """Clicks add tokens to every prompt; "not a point" clicks keep box and point prompts aligned."""
    embeddings, is_point, boxes, points, text = _batch()
    none = (torch.zeros(6, 2, 2), torch.full((6, 2), -1))
    clicked = (torch.tensor([[[70.0, 80.0], [0.0, 0.0]]] * 6), torch.tensor([[0, -1]] * 6))
    with torch.inference_mode():
        plain = segsam(embeddings, is_point, boxes, points, text)
        padded = segsam(embeddings, is_point, boxes, points, text, clicks=none)
        corrected = segsam(embeddings, is_point, boxes, points, text, clicks=clicked)
        sparse, _ = segsam.encode_prompts(is_point, boxes, points, torch.device("cpu"), clicked)
    assert sparse.shape[:2] == (6, 4)  # 2 prompt tokens + 2 clicks, for boxes and points alike
    assert padded.masks.shape == corrected.masks.shape == plain.masks.shape
    assert not torch.allclose(corrected.masks, padded.masks)  # a negative click changes the mask
    assert corrected.class_logits.shape == (6, C)
    with pytest.raises(ValueError, match="clicks N x P x 2"):
        segsam(embeddings, is_point, boxes, points, text, clicks=(torch.zeros(6, 2), torch.zeros(6, 2)))


def test_outputs_of_prompt_chunks_concatenate(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with torch.inference_mode():
        whole = segsam(embeddings, is_point, boxes, points, text)
        parts = [
            segsam(embeddings[i : i + 4], is_point[i : i + 4], boxes[i : i + 4], points[i : i + 4], text)
            for i in (0, 4)
        ]
    joined = ModelOutput.concatenate(parts)
    for field in ("masks", "iou", "sem_masks", "class_logits", "presence_logits"):
        torch.testing.assert_close(getattr(joined, field), getattr(whole, field), rtol=1e-4, atol=1e-4)
    assert joined.class_masks is None
    with pytest.raises(ValueError, match="nothing to concatenate"):
        ModelOutput.concatenate([])


def test_t2vse_token_feeds_sagd_only_unless_v1():
    embeddings, is_point, boxes, points, text = _batch()
    for method, sawd_sees_text in (("t2vse", False), ("t2vse_v1", True)):
        model = _build(method)
        with torch.inference_mode():
            a = model(embeddings, is_point, boxes, points, text)
            b = model(embeddings, is_point, boxes, points, text * -1.0)
        assert not torch.allclose(a.masks, b.masks), method
        assert torch.allclose(a.sem_masks, b.sem_masks) is not sawd_sees_text, method
        assert torch.equal(a.presence_logits, b.presence_logits), method  # the unprompted branch never sees text


def test_sawd_sem_outputs_class_masks_and_needs_their_targets():
    model = _build("sawd_sem")
    embeddings, is_point, boxes, points, _ = _batch()
    out = model(embeddings, is_point, boxes, points)
    assert out.class_masks.shape == (6, C, 64, 64) and out.presence_logits is None  # decoder resolution
    masks, classes, presence = torch.zeros(6, 1, 256, 256), torch.arange(6) % C, torch.zeros(6, C)
    loss = MethodLoss.for_model(model)
    with pytest.raises(ValueError, match="needs class_masks"):
        loss(out, masks, classes, presence)
    terms = loss(out, masks, classes, presence, class_masks=torch.zeros(6, C, 256, 256))
    assert "class_mask_bce" in terms and "presence_bce" not in terms and "cmsa" not in terms


def test_loss_total_is_sagd_plus_sawd_plus_lambda_cmsa(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    out = segsam(embeddings, is_point, boxes, points, text)
    masks = torch.zeros(6, 1, 256, 256)
    masks[:, :, 50:150, 60:120] = 1
    classes = torch.tensor([0, 1, 2, 3, 4, 5])
    presence = torch.zeros(6, C)
    presence[:3, 1] = 1
    terms = MethodLoss.for_model(segsam, {"lambda_cmsa": 0.25})(out, masks, classes, presence)
    torch.testing.assert_close(terms["loss"], terms["sagd"] + terms["sawd"] + 0.25 * terms["cmsa"])
    assert {"focal", "dice", "iou_mse", "class_ce", "mask_bce", "mask_dice", "presence_bce", "cmsa"} <= set(terms)
    baseline = _build("ft_decoder")
    terms = MethodLoss.for_model(baseline)(baseline(embeddings, is_point, boxes, points), masks, classes, presence)
    assert set(terms) == {"loss", "sagd", "focal", "dice", "iou_mse"}


def test_input_validation(segsam):
    embeddings, is_point, boxes, points, text = _batch()
    with pytest.raises(ValueError, match="N x 256 x 16 x 16"):
        segsam(embeddings[:, :, :8, :8], is_point, boxes, points, text)
    with pytest.raises(ValueError, match="one per prompt"):
        segsam(embeddings[:2], is_point, boxes, points, text)
    with pytest.raises(ValueError, match="class text embeddings"):
        segsam(embeddings, is_point, boxes, points)
    with pytest.raises(ValueError, match="needs is_point"):
        segsam(embeddings)
    with pytest.raises(ValueError, match="boxes 6 x 4"):
        segsam(embeddings, is_point, boxes[:, :2], points, text)
    with pytest.raises(ValueError, match="without its image encoder"):
        segsam.encode(torch.rand(1, 3, 256, 256))
    with pytest.raises(ValueError, match="B x 3 x 256 x 256"):
        segsam.encode(torch.rand(1, 3, 128, 128))


def test_constructor_validation(segsam):
    with pytest.raises(ValueError, match="prompt encoder and a mask decoder"):
        PromptableModel(num_classes=C)
    with pytest.raises(ValueError, match="SAWD has 6 classes"):
        PromptableModel(
            num_classes=C + 1, prompt_encoder=segsam.prompt_encoder, mask_decoder=segsam.mask_decoder, sawd=segsam.sawd
        )
    with pytest.raises(ValueError, match="CMSA needs"):
        PromptableModel(
            num_classes=C, prompt_encoder=segsam.prompt_encoder, mask_decoder=segsam.mask_decoder, cmsa=True
        )
    with pytest.raises(ValueError, match="t2vse_to_sawd"):
        PromptableModel(
            num_classes=C, prompt_encoder=segsam.prompt_encoder, mask_decoder=segsam.mask_decoder, t2vse_to_sawd=True
        )


def test_train_mode_keeps_a_frozen_encoder_in_eval():
    model = _build("ft_decoder", small=False, with_image_encoder=True).train()
    assert model.training and model.mask_decoder.training and not model.image_encoder.training
    medsam = _build("medsam", vit_geometry=SMALL_VIT).train()
    assert medsam.image_encoder.training  # its encoder trains
    assert medsam.embedding_size == (16, 16)


def test_vit_b_masks_are_resized_to_256():
    model = _build("sam_med2d+sawd", vit_geometry=SMALL_VIT)
    embeddings, is_point, boxes, points, _ = _batch()
    with torch.inference_mode():
        out = model(model.encode(torch.rand(2, 3, 256, 256))[[0, 0, 0, 1, 1, 1]], is_point, boxes, points)
        direct = model(embeddings, is_point, boxes, points)
    assert out.masks.shape == direct.masks.shape == (6, 1, 256, 256)
    assert out.sem_masks.shape == (6, 1, 256, 256)


def test_prompt_free_model():
    model = _build("unet")
    images = torch.rand(1, 3, 256, 256)
    assert model.prompt_free and model.embedding_size is None and torch.equal(model.encode(images), images)
    out = model(images)
    assert out.semantic.shape == (1, C + 1, 256, 256) and out.masks is None
    terms = PromptFreeLoss()(out, torch.randint(0, C + 1, (1, 256, 256)))
    assert torch.isfinite(terms["loss"])
    with pytest.raises(ValueError, match="PromptFreeLoss"):
        MethodLoss.for_model(model)
    with pytest.raises(ValueError, match="PromptFreeLoss"):
        MethodLoss(sawd=False)(out, torch.zeros(1, 1, 256, 256), torch.zeros(1, dtype=torch.long), torch.zeros(1, C))
