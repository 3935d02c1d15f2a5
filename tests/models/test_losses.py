"""SEG-SAM losses (segsam.models.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from segsam.models.losses import (
    LOSS_DEFAULTS,
    MethodLoss,
    PromptFreeLoss,
    SagdLoss,
    SawdLoss,
    SemanticLoss,
    cmsa_loss,
    loss_weights,
    soft_iou,
)
from segsam.models.segsam_net import ModelOutput

N, C, S = 3, 4, 32


def _square(n: int, lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(n, 1, S, S)
    mask[:, :, lo:hi, lo:hi] = 1
    return mask


def test_cmsa_is_zero_for_identical_and_one_for_disjoint_binary_masks():
    a, b = _square(N, 2, 10), _square(N, 20, 30)
    torch.testing.assert_close(soft_iou(a, a), torch.ones(N))
    torch.testing.assert_close(soft_iou(a, b), torch.zeros(N))
    logits_a, logits_b = (a * 2 - 1) * 100, (b * 2 - 1) * 100  # sigmoid -> exactly 0 / 1 in float32
    assert float(cmsa_loss(logits_a, logits_a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cmsa_loss(logits_a, logits_b)) == pytest.approx(1.0, abs=1e-6)
    assert float(cmsa_loss(-100 * torch.ones(N, 1, S, S), -100 * torch.ones(N, 1, S, S))) == pytest.approx(
        0.0, abs=1e-6
    )
    half = cmsa_loss(logits_a, (_square(N, 2, 6) * 2 - 1) * 100)  # 16 of 64 pixels
    assert float(half) == pytest.approx(1 - 16 / 64, abs=1e-5)


def test_cmsa_gradient_reaches_both_masks():
    a = torch.zeros(N, 1, S, S, requires_grad=True)
    b = torch.zeros(N, 1, S, S, requires_grad=True)
    cmsa_loss(a, b + 1.0).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_loss_weights_merge_and_validate():
    assert loss_weights(None) == LOSS_DEFAULTS
    assert LOSS_DEFAULTS["focal_weight"] == 20.0 and LOSS_DEFAULTS["lambda_cmsa"] == 1.0
    assert loss_weights({"lambda_cmsa": 0.5})["lambda_cmsa"] == 0.5
    with pytest.raises(ValueError, match="unknown loss weights"):
        loss_weights({"lamda_cmsa": 1})
    with pytest.raises(ValueError, match=">= 0"):
        loss_weights({"dice_weight": -1})
    with pytest.raises(ValueError, match="number"):
        loss_weights({"dice_weight": "1"})
    with pytest.raises(ValueError, match=">= 0"):
        loss_weights({"dice_weight": math.nan})


@pytest.mark.parametrize("logit", [-20.0, 0.0, 20.0])
def test_losses_are_finite_with_empty_masks(logit):
    empty = torch.zeros(N, 1, S, S)
    logits = torch.full((N, 1, S, S), logit, requires_grad=True)
    sagd = SagdLoss()(logits, torch.full((N, 1), 0.5), empty)
    sawd = SawdLoss()(
        target=empty,
        classes=torch.tensor([0, 1, 3]),
        presence=torch.zeros(N, C),
        mask_logits=logits,
        class_logits=torch.zeros(N, C),
        presence_logits=torch.zeros(N, C),
        class_mask_logits=torch.full((N, C, S, S), logit),
        class_masks=torch.zeros(N, C, S, S),
    )
    terms = {**sagd, **sawd, "cmsa": cmsa_loss(logits, logits)}
    for name, value in terms.items():
        assert torch.isfinite(value), name
    (sagd["sagd"] + sawd["sawd"] + terms["cmsa"]).backward()
    assert torch.isfinite(logits.grad).all()


def test_sagd_loss_matches_its_formula():
    target = _square(N, 4, 12)
    logits = torch.randn(N, 1, S, S)
    iou_pred = torch.rand(N, 1)
    weights = {"focal_weight": 3.0, "dice_weight": 2.0, "iou_weight": 0.5}
    out = SagdLoss(weights)(logits, iou_pred, target)
    torch.testing.assert_close(out["sagd"], 3 * out["focal"] + 2 * out["dice"] + 0.5 * out["iou_mse"])
    perfect = SagdLoss()((target * 2 - 1) * 50, torch.ones(N, 1), target)
    assert float(perfect["iou_mse"]) == 0.0 and float(perfect["dice"]) < 1e-4


def test_sawd_loss_terms_and_validation():
    target = _square(N, 4, 12)
    out = SawdLoss()(
        target=target,
        classes=torch.tensor([0, 2, 3]),
        presence=torch.tensor([[0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]),
        mask_logits=torch.randn(N, 1, S, S),
        class_logits=torch.randn(N, C),
        presence_logits=torch.randn(N, C),
    )
    assert set(out) == {"class_ce", "mask_bce", "mask_dice", "presence_bce", "sawd"}
    torch.testing.assert_close(out["sawd"], out["class_ce"] + out["mask_bce"] + out["mask_dice"] + out["presence_bce"])
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 4\)"):
        SawdLoss()(
            target=target, classes=torch.tensor([0, 1, 4]), presence=torch.zeros(N, C), class_logits=torch.randn(N, C)
        )
    with pytest.raises(ValueError, match="presence target"):
        SawdLoss()(
            target=target, classes=torch.zeros(N), presence=torch.zeros(N, C + 1), presence_logits=torch.randn(N, C)
        )
    with pytest.raises(ValueError, match="needs class_masks"):
        SawdLoss()(
            target=target, classes=torch.zeros(N), presence=torch.zeros(N, C), class_mask_logits=torch.randn(N, C, 8, 8)
        )


def test_sawd_sem_targets_are_resized_to_the_decoder_resolution():
    class_masks = torch.zeros(N, C, S, S)
    class_masks[:, 1, :16, :16] = 1
    out = SawdLoss()(
        target=_square(N, 0, 4),
        classes=torch.zeros(N, dtype=torch.long),
        presence=torch.zeros(N, C),
        class_mask_logits=torch.zeros(N, C, S // 4, S // 4),
        class_masks=class_masks,
    )
    assert torch.isfinite(out["class_mask_bce"]) and torch.isfinite(out["class_mask_dice"])


def test_semantic_loss():
    logits = torch.randn(2, C + 1, S, S, requires_grad=True)
    labels = torch.randint(0, C + 1, (2, S, S))
    out = SemanticLoss()(logits, labels)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    background = SemanticLoss()(logits, torch.zeros(2, S, S, dtype=torch.long))
    assert torch.isfinite(background["loss"])
    with pytest.raises(ValueError, match="labels must lie"):
        SemanticLoss()(logits, labels + C + 1)


def _output(sawd: bool) -> ModelOutput:
    g = torch.Generator().manual_seed(3)
    out = ModelOutput(masks=torch.randn(N, 1, S, S, generator=g), iou=torch.rand(N, 1, generator=g))
    if sawd:
        out.sem_masks = torch.randn(N, 1, S, S, generator=g)
        out.class_logits = torch.randn(N, C, generator=g)
        out.presence_logits = torch.randn(N, C, generator=g)
    return out


def test_method_loss_adds_the_terms_of_the_parts_it_was_built_for():
    target, classes, presence = _square(N, 4, 12), torch.tensor([0, 2, 3]), torch.zeros(N, C)
    weights = {"lambda_cmsa": 0.5, "focal_weight": 3.0}
    out = _output(sawd=True)
    loss = MethodLoss(sawd=True, cmsa=True, weights=weights)
    terms = loss(out, target, classes, presence)
    sagd = SagdLoss(weights)(out.masks, out.iou, target)
    sawd = SawdLoss(weights)(
        target=target,
        classes=classes,
        presence=presence,
        mask_logits=out.sem_masks,
        class_logits=out.class_logits,
        presence_logits=out.presence_logits,
    )
    cmsa = cmsa_loss(out.sem_masks, out.masks)
    torch.testing.assert_close(terms["loss"], sagd["sagd"] + sawd["sawd"] + 0.5 * cmsa, rtol=0, atol=0)
    torch.testing.assert_close(loss(out, target, classes, presence)["loss"], terms["loss"], rtol=0, atol=0)  # reusable
    right = (out.class_logits.argmax(1) == classes).float().mean()
    assert terms["class_acc"] == right and not terms["class_acc"].requires_grad  # watched, never trained on
    baseline = MethodLoss(sawd=False)(out, target, classes, presence)
    assert set(baseline) == {"loss", "sagd", "focal", "dice", "iou_mse"}
    with pytest.raises(ValueError, match="CMSA term needs SAWD"):
        MethodLoss(sawd=False, cmsa=True)
    with pytest.raises(ValueError, match="unknown loss weights"):
        MethodLoss(sawd=False, weights={"lamda_cmsa": 1})
    with pytest.raises(ValueError, match="no SAWD predictions"):
        loss(_output(sawd=False), target, classes, presence)


def test_prompt_free_loss_is_the_semantic_loss_of_the_output():
    logits = torch.randn(2, C + 1, S, S)
    labels = torch.randint(0, C + 1, (2, S, S))
    weights = {"semantic_dice_weight": 2.0}
    terms = PromptFreeLoss(weights)(ModelOutput(masks=None, iou=None, semantic=logits), labels)
    expected = SemanticLoss(weights)(logits, labels)
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="prompt-free model's output"):
        PromptFreeLoss()(_output(sawd=False), labels)
    with pytest.raises(ValueError, match="PromptFreeLoss"):
        MethodLoss(sawd=False)(
            ModelOutput(masks=None, iou=None, semantic=logits), torch.zeros(2, 1, S, S), labels, labels
        )
