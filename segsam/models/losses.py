"""SEG-SAM's losses (docs/methods.md#loss, paper §3.3).

``total = L_SAGD + L_SAWD + lambda_cmsa * L_CMSA`` where

* ``L_SAGD = focal_weight * focal + dice_weight * dice + iou_weight * MSE(IoU head, IoU)``
  (MONAI ``FocalLoss`` with gamma 2 and alpha 0.25, MONAI ``DiceLoss`` on the
  sigmoid; the IoU target is the IoU of the thresholded prediction, no grad);
* ``L_SAWD = class_weight * CE(class) + mask_bce_weight * BCE(mask) + mask_dice_weight * dice(mask)
  + presence_weight * BCE(presence)``; with ``sawd_sem`` the presence term is
  replaced by ``class_mask_weight * (BCE + dice)`` of the per-class masks;
* ``L_CMSA = 1 - softIoU(sigmoid(SAWD mask), sigmoid(SAGD mask))``, mean over
  prompts (gradients reach both decoders).

Every weight comes from a config mapping (:func:`loss_weights`, defaults in
:data:`LOSS_DEFAULTS`; ``lambda_cmsa`` = 1.0 because the paper's value was lost
in extraction). Terms of components a method does not have are not computed.
All terms are finite for empty masks.

Prompt-free networks (U-Net, UNETR) and PG-SAM use :class:`SemanticLoss`:
cross-entropy + soft-max dice over C + 1 classes (0 = background), for PG-SAM
averaged over its decoding rounds.

A training run builds its loss once, from the model's parts and the ``loss``
config section: :class:`MethodLoss` (``MethodLoss.for_model``) for a
promptable model's :class:`~segsam.models.segsam_net.ModelOutput`, or
:class:`PromptFreeLoss` for a prompt-free network's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from segsam.models.segsam_net import ModelOutput, PromptableModel

__all__ = [
    "LOSS_DEFAULTS",
    "loss_weights",
    "soft_iou",
    "cmsa_loss",
    "SagdLoss",
    "SawdLoss",
    "SemanticLoss",
    "MethodLoss",
    "PromptFreeLoss",
]

#: Default loss weights; a config mapping overrides any of them.
LOSS_DEFAULTS: dict[str, float] = {
    "focal_weight": 20.0,
    "dice_weight": 1.0,
    "iou_weight": 1.0,
    "class_weight": 1.0,
    "mask_bce_weight": 1.0,
    "mask_dice_weight": 1.0,
    "presence_weight": 1.0,
    "class_mask_weight": 1.0,
    "lambda_cmsa": 1.0,
    "semantic_ce_weight": 1.0,
    "semantic_dice_weight": 1.0,
}


def loss_weights(weights: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Merges a config mapping of loss weights over :data:`LOSS_DEFAULTS`.

    Args:
        weights (Mapping[str, Any] | None): Some of the keys of
          :data:`LOSS_DEFAULTS` with numeric values.

    Returns:
        dict[str, float]: Every weight.

    Raises:
        ValueError: Naming unknown keys, or a value that is not a finite,
          non-negative number.
    """
    merged = dict(LOSS_DEFAULTS)
    if not weights:
        return merged
    unknown = sorted(set(weights) - set(LOSS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown loss weights {unknown}; known: {', '.join(LOSS_DEFAULTS)}")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"loss weight {key} must be a number, got {value!r}")
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"loss weight {key} must be finite and >= 0, got {value}")
        merged[key] = float(value)
    return merged


def soft_iou(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft IoU of two probability maps, per sample.

    ``sum(p q) / sum(p + q - p q)``; two empty maps have IoU 1.

    Args:
        p (torch.Tensor): N x ... probabilities in [0, 1].
        q (torch.Tensor): Same shape.
        eps (float): Added to numerator and denominator.

    Returns:
        torch.Tensor: N IoU values in [0, 1].

    Raises:
        ValueError: If the shapes differ.
    """
    if p.shape != q.shape:
        raise ValueError(f"soft_iou needs equal shapes, got {tuple(p.shape)} and {tuple(q.shape)}")
    inter = (p * q).flatten(1).sum(1)
    union = (p + q - p * q).flatten(1).sum(1)
    return (inter + eps) / (union + eps)


def cmsa_loss(sawd_logits: torch.Tensor, sagd_logits: torch.Tensor) -> torch.Tensor:
    """Cross-mask spatial alignment: ``mean(1 - softIoU(sigmoid(SAWD), sigmoid(SAGD)))``.

    0 for identical binary masks, 1 for disjoint ones.

    Args:
        sawd_logits (torch.Tensor): N x 1 x H x W SAWD mask logits (class stripped).
        sagd_logits (torch.Tensor): N x 1 x H x W SAGD mask logits.

    Returns:
        torch.Tensor: Scalar loss.
    """
    return (1.0 - soft_iou(torch.sigmoid(sawd_logits), torch.sigmoid(sagd_logits))).mean()


def _check_masks(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")


class SagdLoss(nn.Module):
    """L_SAGD: focal + dice + MSE of the IoU head (weights from :func:`loss_weights`).

    Args:
        weights (Mapping[str, Any] | None): Loss weights (defaults when None).
    """

    def __init__(self, weights: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.weights = loss_weights(weights)
        self.focal = FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False, reduction="mean")
        self.dice = DiceLoss(sigmoid=True, reduction="mean")

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Computes L_SAGD.

        Args:
            logits (torch.Tensor): N x 1 x H x W mask logits.
            iou_pred (torch.Tensor): N x 1 predicted IoU.
            target (torch.Tensor): N x 1 x H x W, 0/1.

        Returns:
            dict[str, torch.Tensor]: ``sagd`` (the weighted sum), ``focal``,
              ``dice``, ``iou_mse``.

        Raises:
            ValueError: If the shapes disagree.
        """
        _check_masks(logits, target, "SAGD mask")
        if iou_pred.shape != (logits.shape[0], 1):
            raise ValueError(f"expected IoU predictions N x 1, got {tuple(iou_pred.shape)}")
        target = target.to(logits.dtype)
        with torch.no_grad():
            pred = logits > 0
            truth = target > 0.5
            inter = (pred & truth).flatten(1).sum(1).float()
            union = (pred | truth).flatten(1).sum(1).float()
            iou_true = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        focal = self.focal(logits, target)
        dice = self.dice(logits, target)
        iou_mse = F.mse_loss(iou_pred[:, 0], iou_true.to(iou_pred.dtype))
        w = self.weights
        total = w["focal_weight"] * focal + w["dice_weight"] * dice + w["iou_weight"] * iou_mse
        return {"sagd": total, "focal": focal, "dice": dice, "iou_mse": iou_mse}


class SawdLoss(nn.Module):
    """L_SAWD: CE(class) + (BCE + dice)(mask) + BCE(presence) [or the ``sawd_sem`` mask terms].

    Parts whose prediction is None are skipped (switched-off branches).

    Args:
        weights (Mapping[str, Any] | None): Loss weights (defaults when None).
    """

    def __init__(self, weights: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.weights = loss_weights(weights)
        self.dice = DiceLoss(sigmoid=True, reduction="mean")

    def forward(
        self,
        *,
        target: torch.Tensor,
        classes: torch.Tensor,
        presence: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        class_logits: torch.Tensor | None = None,
        presence_logits: torch.Tensor | None = None,
        class_mask_logits: torch.Tensor | None = None,
        class_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Computes L_SAWD.

        Args:
            target (torch.Tensor): N x 1 x H x W prompted-object masks, 0/1.
            classes (torch.Tensor): N class indices in ``[0, C)``.
            presence (torch.Tensor): N x C, 1 where class k occurs among the
              image's objects that were not prompted.
            mask_logits (torch.Tensor | None): N x 1 x H x W SAWD mask logits.
            class_logits (torch.Tensor | None): N x C.
            presence_logits (torch.Tensor | None): N x C.
            class_mask_logits (torch.Tensor | None): N x C x h x w
              (``sawd_sem``), at the decoder's resolution.
            class_masks (torch.Tensor | None): N x C x H x W targets for
              ``class_mask_logits`` (resized by area to h x w); required
              when ``class_mask_logits`` is given.

        Returns:
            dict[str, torch.Tensor]: ``sawd`` (the weighted sum) and the terms
              computed (``class_ce``, ``mask_bce``, ``mask_dice``,
              ``presence_bce``, ``class_mask_bce``, ``class_mask_dice``).

        Raises:
            ValueError: If shapes disagree, a class index is out of range, or
              ``class_masks`` is missing for ``class_mask_logits``.
        """
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        total = target.new_zeros((), dtype=torch.float32)
        if class_logits is not None:
            num_classes = class_logits.shape[1]
            if classes.shape != (class_logits.shape[0],):
                raise ValueError(
                    f"expected N class indices, got {tuple(classes.shape)} for {class_logits.shape[0]} prompts"
                )
            if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
                raise ValueError(f"class indices must lie in [0, {num_classes}), got {classes.min()}..{classes.max()}")
            terms["class_ce"] = F.cross_entropy(class_logits, classes.long())
            total = total + w["class_weight"] * terms["class_ce"]
        if mask_logits is not None:
            _check_masks(mask_logits, target, "SAWD mask")
            target_f = target.to(mask_logits.dtype)
            terms["mask_bce"] = F.binary_cross_entropy_with_logits(mask_logits, target_f)
            terms["mask_dice"] = self.dice(mask_logits, target_f)
            total = total + w["mask_bce_weight"] * terms["mask_bce"] + w["mask_dice_weight"] * terms["mask_dice"]
        if presence_logits is not None:
            if presence.shape != presence_logits.shape:
                raise ValueError(
                    f"presence target {tuple(presence.shape)} differs from logits {tuple(presence_logits.shape)}"
                )
            terms["presence_bce"] = F.binary_cross_entropy_with_logits(
                presence_logits, presence.to(presence_logits.dtype)
            )
            total = total + w["presence_weight"] * terms["presence_bce"]
        if class_mask_logits is not None:
            if class_masks is None:
                raise ValueError("the sawd_sem branch needs class_masks (N x C x H x W per-class targets)")
            if class_masks.shape[:2] != class_mask_logits.shape[:2] or class_masks.ndim != 4:
                raise ValueError(
                    f"class_masks {tuple(class_masks.shape)} do not fit logits {tuple(class_mask_logits.shape)}"
                )
            goal = class_masks.to(class_mask_logits.dtype)
            if goal.shape[-2:] != class_mask_logits.shape[-2:]:
                goal = F.interpolate(goal, size=class_mask_logits.shape[-2:], mode="area")
            terms["class_mask_bce"] = F.binary_cross_entropy_with_logits(class_mask_logits, goal)
            terms["class_mask_dice"] = self.dice(class_mask_logits, goal)
            total = total + w["class_mask_weight"] * (terms["class_mask_bce"] + terms["class_mask_dice"])
        terms["sawd"] = total
        return terms


class SemanticLoss(nn.Module):
    """Prompt-free semantic segmentation loss: CE + soft-max dice over C + 1 classes.

    Args:
        weights (Mapping[str, Any] | None): Loss weights (defaults when None).
    """

    def __init__(self, weights: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.weights = loss_weights(weights)
        self.dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=False, reduction="mean")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Computes the loss.

        Args:
            logits (torch.Tensor): B x (C+1) x H x W.
            labels (torch.Tensor): B x H x W label map, 0 = background, k + 1 = class k.

        Returns:
            dict[str, torch.Tensor]: ``loss``, ``ce``, ``dice``.

        Raises:
            ValueError: If shapes disagree or a label is out of range.
        """
        if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[-2:]):
            raise ValueError(
                f"expected logits B x K x H x W and labels B x H x W, got {tuple(logits.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
        labels = labels.long()
        ce = F.cross_entropy(logits, labels)
        dice = self.dice(logits, labels.unsqueeze(1))
        w = self.weights
        return {"loss": w["semantic_ce_weight"] * ce + w["semantic_dice_weight"] * dice, "ce": ce, "dice": dice}


class MethodLoss(nn.Module):
    """A promptable method's training loss: ``L_SAGD (+ L_SAWD + lambda_cmsa * L_CMSA)``.

    Built once per training run for the parts the model has
    (:meth:`for_model`); the terms of absent parts are not computed.

    Args:
        sawd (bool): The model has SAWD: add L_SAWD of the predictions it makes.
        cmsa (bool): Add ``lambda_cmsa * L_CMSA`` (needs SAWD's prompted mask).
        weights (Mapping[str, Any] | None): Loss weights (defaults when None).

    Raises:
        ValueError: CMSA without SAWD, or invalid weights (:func:`loss_weights`).
    """

    def __init__(self, *, sawd: bool, cmsa: bool = False, weights: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if cmsa and not sawd:
            raise ValueError("the CMSA term needs SAWD's prompted mask: build the loss with sawd=True")
        self.weights = loss_weights(weights)
        self.sagd_loss = SagdLoss(self.weights)
        self.sawd_loss = SawdLoss(self.weights) if sawd else None
        self.cmsa = cmsa

    @classmethod
    def for_model(cls, model: PromptableModel, weights: Mapping[str, Any] | None = None) -> MethodLoss:
        """The loss of ``model``'s parts (SAWD present? CMSA on?).

        Args:
            model (PromptableModel): A promptable model.
            weights (Mapping[str, Any] | None): Loss weights (the ``loss`` config section).

        Raises:
            ValueError: For a prompt-free model (it trains with :class:`PromptFreeLoss`).
        """
        if model.prompt_free:
            raise ValueError("a prompt-free model is trained with PromptFreeLoss (CE + dice of its label map)")
        return cls(sawd=model.sawd is not None, cmsa=model.cmsa, weights=weights)

    def forward(
        self,
        out: ModelOutput,
        masks: torch.Tensor,
        classes: torch.Tensor,
        presence: torch.Tensor,
        class_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Computes the loss of N prompts.

        Args:
            out (ModelOutput): The model's output for N prompts.
            masks (torch.Tensor): N x 1 x 256 x 256 prompted-object masks {0, 1}.
            classes (torch.Tensor): N long, class index in ``[0, C)`` of each
              prompted object.
            presence (torch.Tensor): N x C {0, 1}: classes present among the
              image's objects that were NOT prompted.
            class_masks (torch.Tensor | None): N x C x 256 x 256 {0, 1}
              full-image masks per class (every object of class k in the
              prompt's image); required by ``sawd_sem`` only.

        Returns:
            dict[str, torch.Tensor]: ``loss`` (the total) and every term
              (``sagd``, ``focal``, ``dice``, ``iou_mse``, ``sawd``,
              ``class_ce``, ``mask_bce``, ``mask_dice``, ``presence_bce``,
              ``class_mask_bce``, ``class_mask_dice``, ``cmsa``) it computed,
              and ``class_acc``, the share of prompts whose SAWD class is right.

        Raises:
            ValueError: For a prompt-free network's output (use
              :class:`PromptFreeLoss`), an output without SAWD predictions,
              or inconsistent shapes.
        """
        if out.masks is None or out.iou is None:
            raise ValueError("the output has no SAGD masks: a prompt-free model is trained with PromptFreeLoss")
        if (
            self.sawd_loss is not None
            and out.class_logits is None
            and out.presence_logits is None
            and out.class_masks is None
        ):
            raise ValueError("the output has no SAWD predictions (forward(..., semantic=False)); the loss needs them")
        terms = self.sagd_loss(out.masks, out.iou, masks)
        total = terms["sagd"]
        if self.sawd_loss is not None:
            sawd_terms = self.sawd_loss(
                target=masks,
                classes=classes.to(out.masks.device),
                presence=presence.to(out.masks.device),
                mask_logits=out.sem_masks,
                class_logits=out.class_logits,
                presence_logits=out.presence_logits,
                class_mask_logits=out.class_masks,
                class_masks=class_masks,
            )
            terms.update(sawd_terms)
            total = total + sawd_terms["sawd"]
        if self.cmsa:
            terms["cmsa"] = cmsa_loss(out.sem_masks, out.masks)
            total = total + self.weights["lambda_cmsa"] * terms["cmsa"]
        if self.sawd_loss is not None and out.class_logits is not None:  # a figure to watch, not a loss term
            right = out.class_logits.detach().argmax(1) == classes.to(out.class_logits.device)
            terms["class_acc"] = right.float().mean()
        terms["loss"] = total
        return terms


class PromptFreeLoss(nn.Module):
    """A prompt-free network's training loss: :class:`SemanticLoss` of its output's ``semantic`` logits.

    Args:
        weights (Mapping[str, Any] | None): Loss weights (defaults when None).
    """

    def __init__(self, weights: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.semantic_loss = SemanticLoss(weights)

    def forward(self, out: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Computes CE + dice over C + 1 classes.

        Args:
            out (ModelOutput): A prompt-free network's output (``semantic``:
              B x (C + 1) x S x S logits).
            labels (torch.Tensor): B x S x S label map, 0 = background,
              k + 1 = class k.

        Returns:
            dict[str, torch.Tensor]: ``loss``, ``ce``, ``dice``. For an output
              with earlier rounds (PG-SAM's ``semantic_rounds``, K rounds),
              ``loss`` is the mean of the K rounds' losses, ``last_round`` the
              last round's, and ``ce`` / ``dice`` are the last round's terms.

        Raises:
            ValueError: For a promptable model's output, or labels that do not fit.
        """
        if out.semantic is None:
            raise ValueError("PromptFreeLoss needs a prompt-free model's output (out.semantic)")
        labels = labels.to(out.semantic.device)
        terms = self.semantic_loss(out.semantic, labels)
        if out.semantic_rounds is not None:  # PG-SAM's earlier rounds: the loss is the mean over all K rounds
            earlier = [
                self.semantic_loss(out.semantic_rounds[:, r], labels)["loss"]
                for r in range(out.semantic_rounds.shape[1])
            ]
            terms["last_round"] = terms["loss"]
            terms["loss"] = (terms["loss"] + torch.stack(earlier).sum()) / (len(earlier) + 1)
        return terms
