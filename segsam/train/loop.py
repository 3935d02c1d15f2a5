"""Training on cached image embeddings (frozen encoder), tracked in MLflow.

Per step: ``batch_size`` training slices; for each, up to ``masks_per_image``
of its masks, each prompted by a box (tight box + jitter) or, with probability
``point_fraction``, one random foreground point. Loss (SPEC §2, SAGD):
``20 * focal + dice + MSE(iou prediction, IoU of the prediction)``. Adam with
the lr halved (``lr_gamma``) after each epoch in ``lr_milestones``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.errors import ConfigError, DataError
from segsam.models.litemedsam import LiteMedSAM, build_litemedsam
from segsam.models.methods import MethodSpec, get_method, parameter_counts, set_trainable
from segsam.models.preprocess import ResizeInfo
from segsam.models.weights import resolve_weights
from segsam.tracking import start_run
from segsam.train.checkpoint import TrainState, clear_state, load_state, save_state
from segsam.train.embedding_cache import EmbeddingStore, read_png
from segsam.train.prompts import jitter_box, mask_box, random_point

log = logging.getLogger(__name__)

FOCAL_WEIGHT = 20.0


@dataclass
class TrainImage:
    """One training slice: its cached-embedding key and its masks in the model frame."""

    image: str
    masks: torch.Tensor  # M x 256 x 256 bool


def load_train_images(masks_table: pd.DataFrame, size: int = 256) -> list[TrainImage]:
    """Group the train split's masks by image and resize them into the model frame."""
    items = []
    for image, group in masks_table.groupby("image", sort=True):
        info = ResizeInfo.for_shape(int(group["height"].iloc[0]), int(group["width"].iloc[0]), size)
        masks = np.stack([read_png(path) > 0 for path in group["mask"]])
        items.append(TrainImage(image=str(image), masks=info.mask_to_model(masks)))
    return items


def build_decoder_model(encoder_cfg: Mapping[str, Any]) -> LiteMedSAM:
    """LiteMedSAM's prompt encoder + mask decoder with pretrained weights, no image encoder."""
    model = build_litemedsam(resolve_weights(encoder_cfg["weights"], encoder_cfg["sha256"]))
    model.image_encoder = nn.Identity()  # embeddings come from the cache
    return model


def simulate_prompts(
    masks: torch.Tensor, k: int, jitter: int, point_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Pick up to ``k`` masks of one image and prompt each.

    Returns:
        (chosen masks K x 256 x 256, is_point K bool, boxes K x 4, points K x 2).
    """
    chosen = rng.choice(masks.shape[0], size=min(k, masks.shape[0]), replace=False)
    is_point = rng.random(len(chosen)) < point_fraction
    boxes = np.zeros((len(chosen), 4), np.float32)
    points = np.zeros((len(chosen), 2), np.float32)
    size = masks.shape[-2:]
    for i, index in enumerate(chosen):
        mask = masks[index].numpy()
        if is_point[i]:
            points[i] = random_point(mask, rng)
        else:
            boxes[i] = jitter_box(mask_box(mask), jitter, tuple(size), rng)
    return masks[torch.from_numpy(chosen)], is_point, boxes, points


def decode_prompts(model: LiteMedSAM, embeddings: torch.Tensor, is_point: np.ndarray, boxes: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch mixing box and point prompts (one embedding per prompt).

    Returns:
        (logits N x 1 x 256 x 256, iou predictions N x 1), in prompt order.
    """
    n = len(is_point)
    logits = embeddings.new_zeros((n, 1, 256, 256))
    iou = embeddings.new_zeros((n, 1))
    point_idx = np.flatnonzero(is_point)
    box_idx = np.flatnonzero(~is_point)
    if box_idx.size:
        out, score = model.decode(embeddings[box_idx], boxes=torch.from_numpy(boxes[box_idx]))
        logits = logits.index_copy(0, torch.from_numpy(box_idx), out)
        iou = iou.index_copy(0, torch.from_numpy(box_idx), score)
    if point_idx.size:
        coords = torch.from_numpy(points[point_idx])[:, None, :]
        labels = torch.ones(point_idx.size, 1, dtype=torch.int64)
        out, score = model.decode(embeddings[point_idx], points=(coords, labels))
        logits = logits.index_copy(0, torch.from_numpy(point_idx), out)
        iou = iou.index_copy(0, torch.from_numpy(point_idx), score)
    return logits, iou


class SagdLoss(nn.Module):
    """L_SAGD = 20 * focal + dice + MSE(IoU head, IoU of the thresholded prediction)."""

    def __init__(self) -> None:
        super().__init__()
        self.focal = FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False, reduction="mean")
        self.dice = DiceLoss(sigmoid=True, reduction="mean")

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: logits N x 1 x H x W, iou_pred N x 1, target N x 1 x H x W (0/1 float)."""
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (target > 0.5)).flatten(1).sum(1).float()
            union = (pred | (target > 0.5)).flatten(1).sum(1).float()
            iou_true = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        focal = self.focal(logits, target)
        dice = self.dice(logits, target)
        iou = nn.functional.mse_loss(iou_pred.squeeze(1), iou_true)
        total = FOCAL_WEIGHT * focal + dice + iou
        return {"loss": total, "focal": focal, "dice": dice, "iou_mse": iou}


LOSS_TERMS = ("loss", "focal", "dice", "iou_mse")


class PromptForward(nn.Module):
    """Routes a mixed box/point batch through ``forward`` (so DDP sees the call).

    Args:
        model: A :class:`LiteMedSAM` without image encoder (embeddings are cached).
    """

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor, is_point: np.ndarray, boxes: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """N x 256 x 64 x 64 embeddings and N prompts -> (N x 1 x 256 x 256 logits, N x 1 IoU)."""
        return decode_prompts(self.model, embeddings, is_point, boxes, points)


def _shard(batch: list[TrainImage], rank: int, world: int) -> list[int]:
    """Positions of this rank's images in the global batch: ``rank, rank + world, ...``."""
    return list(range(rank, len(batch), world))


def train_method(
    method: str,
    masks_parquet: str | Path,
    cache_dir: str | Path,
    out_checkpoint: str | Path,
    out_summary: str | Path,
    *,
    config: Mapping[str, Any],
    threads: int = 1,
    state_dir: str | Path | None = None,
    fingerprint: str = "",
) -> dict[str, Any]:
    """Train one method on the train split from cached embeddings (1..N processes).

    Args:
        method: Method name (must train; see :mod:`segsam.models.methods`).
        masks_parquet: The index's masks table.
        cache_dir: Embedding cache folder of the frozen encoder.
        out_checkpoint: State dict of the trained sub-modules (atomic write).
        out_summary: JSON with losses, timings, parameter counts, MLflow run id.
        config: The whole validated config.
        threads: torch intra-op threads.
        state_dir: Folder of the resume state (written every
            ``train.checkpoint_every`` steps and at each epoch's end; removed
            when training finishes). ``None``: no resume.
        fingerprint: Identifies the settings and code of this training; a
            saved state with another fingerprint is ignored.

    Returns:
        The summary.

    Raises:
        DataError: zero-shot method or empty train split.
        ConfigError: a global batch not divisible by the number of processes.
    """
    from segsam.train.ddp import DistContext

    spec: MethodSpec = get_method(method)
    if not spec.trains:
        raise DataError(f"method {method!r} is zero-shot and has no train stage")
    cfg = config["train"]
    context = DistContext.from_env()
    context.init()
    batch_size = int(cfg["batch_size"])
    if batch_size % context.world_size:
        raise ConfigError(f"config key 'train.batch_size': {batch_size} images per step do not split over {context.world_size} processes")
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))

    table = pd.read_parquet(masks_parquet)
    train_table = table[table["split"] == "train"]
    if train_table.empty:
        raise DataError(f"{masks_parquet}: the train split is empty")
    images = load_train_images(train_table, int(config["encoder"]["image_size"]))
    store = EmbeddingStore.open(cache_dir, train_table["case"].unique())

    model = build_decoder_model(config["encoder"]).to(context.device)
    set_trainable(model, spec)
    n_train, n_frozen = parameter_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=float(cfg["lr"]))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=list(cfg["lr_milestones"]), gamma=float(cfg["lr_gamma"]))
    criterion = SagdLoss()
    forward: nn.Module = PromptForward(model)
    if context.world_size > 1:
        forward = nn.parallel.DistributedDataParallel(forward, find_unused_parameters=True)
    steps_per_epoch = (len(images) + batch_size - 1) // batch_size
    every = int(cfg["checkpoint_every"])
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=bool(cfg["bf16"]) and context.device.type == "cuda")

    state = load_state(state_dir, fingerprint) if state_dir else None
    if state is not None:
        model.load_state_dict(state.model, strict=False)
        optimiser.load_state_dict(state.optimiser)
        scheduler.load_state_dict(state.scheduler)
        if state.torch_rng is not None:
            torch.set_rng_state(state.torch_rng)
    else:
        state = TrainState(fingerprint=fingerprint)

    def trained_weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.split(".", 1)[0] in ("prompt_encoder", "mask_decoder")}

    def snapshot() -> None:
        state.rng_state = rng.bit_generator.state
        state.torch_rng = torch.get_rng_state()
        state.model = trained_weights()
        state.optimiser = optimiser.state_dict()
        state.scheduler = scheduler.state_dict()
        if context.is_main and state_dir:
            save_state(state_dir, state)
        context.barrier()

    with start_run(config, "train", method, run_id=state.mlflow_run_id) as run:
        import mlflow

        if run is not None:
            state.mlflow_run_id = run.info.run_id
            if state.global_step == 0:
                mlflow.log_params({"trainable_params": n_train, "frozen_params": n_frozen, "train_images": len(images), "world_size": context.world_size})
        model.train()
        resumed_mid_epoch = bool(state.order)
        if state.rng_state:  # resumed: continue the prompt-sampling stream where it stopped
            rng.bit_generator.state = state.rng_state
        for epoch in range(state.epoch, int(cfg["epochs"])):
            if not resumed_mid_epoch:
                state.order = rng.permutation(len(images)).tolist()
                state.step_in_epoch = 0
                state.epoch = epoch
            resumed_mid_epoch = False
            sums = torch.zeros(5, dtype=torch.float64)  # loss terms x prompts, prompts
            epoch_start = time.perf_counter()
            bar = tqdm(range(state.step_in_epoch, steps_per_epoch), desc=f"train {method} epoch {epoch + 1}", unit="step",
                       mininterval=2.0, disable=not context.is_main)
            for b in bar:
                step_start = time.perf_counter()
                batch = [images[i] for i in state.order[b * batch_size : (b + 1) * batch_size]]
                prompts = [simulate_prompts(item.masks, int(cfg["masks_per_image"]), int(cfg["box_jitter_px"]), float(cfg["point_fraction"]), rng) for item in batch]
                n_global = sum(len(p[1]) for p in prompts)
                mine = _shard(batch, context.rank, context.world_size)
                targets = torch.cat([prompts[i][0] for i in mine]).unsqueeze(1).float().to(context.device)
                kinds = np.concatenate([prompts[i][1] for i in mine])
                keys = [batch[i].image for i in mine for _ in range(len(prompts[i][1]))]
                embeddings = store.get(keys).to(context.device)
                with autocast:
                    logits, iou = forward(embeddings, kinds, np.concatenate([prompts[i][2] for i in mine]), np.concatenate([prompts[i][3] for i in mine]))
                losses = criterion(logits.float(), iou.float(), targets)
                # DDP averages gradients over ranks: scale each rank's mean so the average is the global mean
                scale = len(kinds) * context.world_size / n_global
                optimiser.zero_grad(set_to_none=True)
                (losses["loss"] * scale).backward()
                if cfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]))
                optimiser.step()
                terms = torch.tensor([float(losses[k].detach()) * len(kinds) for k in LOSS_TERMS] + [len(kinds)], dtype=torch.float64)
                terms = context.all_reduce_sum(terms)
                sums += terms
                state.step_in_epoch = b + 1
                state.global_step += 1
                values = {k: float(terms[i] / terms[-1]) for i, k in enumerate(LOSS_TERMS)}
                if run is not None:
                    mlflow.log_metrics({f"step/{k}": v for k, v in values.items()} | {"step/images_per_s": len(batch) / max(time.perf_counter() - step_start, 1e-9)}, step=state.global_step)
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                if every and state.global_step % every == 0 and state.step_in_epoch < steps_per_epoch:
                    snapshot()
            epoch_time = time.perf_counter() - epoch_start
            state.seconds += epoch_time
            record = {k: float(sums[i] / max(float(sums[-1]), 1.0)) for i, k in enumerate(LOSS_TERMS)}
            record.update({"epoch": epoch + 1, "lr": optimiser.param_groups[0]["lr"], "images_per_s": len(images) / max(epoch_time, 1e-9)})
            state.history.append(record)
            if run is not None:
                mlflow.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            scheduler.step()
            state.epoch = epoch + 1
            state.order = []
            state.step_in_epoch = 0
            snapshot()

        summary = {
            "method": method,
            "train_images": len(images),
            "steps": state.global_step,
            "seconds": state.seconds,
            "world_size": context.world_size,
            "trainable_params": n_train,
            "frozen_params": n_frozen,
            "history": state.history,
            "mlflow_run_id": state.mlflow_run_id,
        }
        if context.is_main:
            with atomic_path(out_checkpoint) as tmp:
                torch.save(trained_weights(), tmp)
            if run is not None:
                mlflow.log_artifact(str(out_checkpoint), artifact_path="checkpoint")
                mlflow.log_dict(dict(config), "config.json")
            write_json(out_summary, summary)
            if state_dir:
                clear_state(state_dir)
        context.barrier()
    return summary
