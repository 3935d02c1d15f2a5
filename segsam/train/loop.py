"""Training of one method (from cached embeddings, or from images), tracked in MLflow.

Per step: ``batch_size`` training slices (the global batch over all
processes; each process runs its share ``micro_batch`` images at a time and
accumulates the gradients, so memory grows with the micro-batch, not the
batch). For each slice, up to ``masks_per_image`` of its masks, each prompted
by a box (tight box + jitter) or, with probability ``point_fraction``, one
random foreground point. The classes of the image's masks that were *not*
prompted are the presence targets of SAWD's unprompted branch. With
``train.iterative_clicks`` = R > 0, each prompt is followed by R corrective
clicks (:func:`add_error_clicks`) and the loss is the mean over the R + 1
rounds. Every method is a :class:`~segsam.models.segsam_net.PromptableModel`;
its ``loss`` is SPEC §2's ``L_SAGD (+ L_SAWD + lambda * L_CMSA)`` with the
weights of the ``loss`` config section. Adam (:func:`make_optimiser`) with
the lr halved (``lr_gamma``) after each epoch in ``lr_milestones``.

Methods whose image encoder trains (SAM-Med2D and Med-SA adapters, MedSAM's
whole encoder) read each slice's image (:func:`~segsam.models.preprocess.encoder_input`)
and encode it inside the model's forward pass, once per image for all of its
prompts; the trained encoder parameters are saved with the checkpoint.

Prompt-free networks (``unet``, ``unetr``: the conventional rows of table 2)
go through the same loop, batches, DDP, resume and tracking, but read each
slice's image (:func:`~segsam.models.preprocess.prepare_image`) instead of a
cached embedding and learn its label map (:func:`label_map`) with
CE + dice over C + 1 classes; they draw no prompts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.data.io import read_png
from segsam.data.prompts import jitter_box, mask_box, random_point
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.errors import ConfigError, DataError
from segsam.methods import MethodSpec, get_method
from segsam.models.build import parameter_counts
from segsam.models.method_model import build_method_model, trained_state
from segsam.models.preprocess import ResizeInfo, encoder_input, prepare_image
from segsam.models.segsam_net import PromptableModel
from segsam.text.cache import load_class_embeddings
from segsam.tracking import start_run
from segsam.train.checkpoint import TrainState, clear_state, load_state, save_state
from segsam.train.dist import DistContext
from segsam.train.prompts import NO_CLICK, error_clicks

log = logging.getLogger(__name__)


@dataclass
class TrainImage:
    """One training slice: its cached-embedding key, its masks in the model frame and their classes."""

    image: str
    masks: torch.Tensor  # M x 256 x 256 bool
    classes: np.ndarray  # M class indices (vocabulary order, 0..C-1)


def load_train_images(masks_table: pd.DataFrame, vocabulary: Vocabulary, size: int = 256) -> list[TrainImage]:
    """Group the train split's masks by image and resize them into the model frame."""
    index = vocabulary.class_index
    items = []
    for image, group in masks_table.groupby("image", sort=True):
        info = ResizeInfo.for_shape(int(group["height"].iloc[0]), int(group["width"].iloc[0]), size)
        masks = np.stack([read_png(path) > 0 for path in group["mask"]])
        classes = np.array([index[int(c)] for c in group["class_id"]], dtype=np.int64)
        items.append(TrainImage(image=str(image), masks=info.mask_to_model(masks), classes=classes))
    return items


def label_map(item: TrainImage) -> torch.Tensor:
    """S x S long label map of one slice: 0 = background, k + 1 where an object of class k lies.

    The objects of a slice come from one label volume, so they do not overlap.
    """
    labels = torch.zeros(item.masks.shape[-2:], dtype=torch.long)
    for mask, k in zip(item.masks, item.classes):
        labels[mask] = int(k) + 1
    return labels


def make_optimiser(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over ``params``, as every training run and benchmark builds it.

    The fused implementation updates all parameters in one kernel (CPU and
    CUDA): the same update as the per-parameter loop, to float rounding, at a
    quarter of its cost for SEG-SAM's 313 tensors on CPU.

    Args:
        params: the trainable parameters (all on one device).
        lr: the learning rate.
    """
    return torch.optim.Adam(params, lr=lr, fused=True)


def simulate_prompts(
    masks: torch.Tensor, k: int, jitter: int, point_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick up to ``k`` masks of one image and prompt each.

    Returns:
        (chosen masks K x 256 x 256, is_point K bool, boxes K x 4, points K x 2,
        indices K of the chosen masks).
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
    return masks[torch.from_numpy(chosen)], is_point, boxes, points, chosen


def presence_targets(item: TrainImage, chosen: np.ndarray, num_classes: int) -> torch.Tensor:
    """K x C: the classes of the image's masks that were not prompted (same row for every prompt)."""
    rest = np.setdiff1d(np.arange(len(item.classes)), chosen)
    row = torch.zeros(num_classes)
    row[torch.from_numpy(item.classes[rest])] = 1.0
    return row.expand(len(chosen), -1)


def add_error_clicks(
    model: PromptableModel,
    embeddings: torch.Tensor,
    is_point: np.ndarray,
    boxes: np.ndarray,
    points: np.ndarray,
    targets: torch.Tensor,
    text: torch.Tensor | None,
    rounds: int,
    image_index: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``rounds`` interactive corrections of N prompts (SAM-style clicks).

    Round r predicts with the clicks of rounds < r (without gradients), then
    adds one click at the centre of the largest error
    (:func:`segsam.train.prompts.error_click`). Clicks not yet placed are
    "not a point" tokens (label -1), so every round has the same number of
    tokens and all rounds go through one batched forward pass for the loss.

    Args:
        model: The model being trained (not a DDP wrapper).
        embeddings: N x 256 x h x w, or B x 256 x h x w with ``image_index``.
        is_point: N bool.
        boxes: N x 4.
        points: N x 2.
        targets: N x 1 x S x S float ground truth.
        text: C x d_text class text embeddings, or None.
        rounds: R >= 1.
        image_index: N long, the image of each prompt (see
            :meth:`PromptableModel.forward`), or None.

    Returns:
        ((R + 1) N x R x 2 click coordinates, (R + 1) N x R labels): round 0
        (no click) first, then each round's prompts with their clicks so far.
    """
    num = len(is_point)
    coords = np.zeros((num, rounds, 2), np.float32)
    labels = np.full((num, rounds), NO_CLICK, np.int64)
    truth = targets[:, 0].detach().cpu().numpy() > 0.5
    all_coords, all_labels = [coords.copy()], [labels.copy()]
    with torch.no_grad():
        for r in range(rounds):
            out = model(
                embeddings,
                is_point,
                boxes,
                points,
                text,
                semantic=False,
                clicks=(coords, labels),
                image_index=image_index,
            )
            predicted = out.masks[:, 0].float().cpu().numpy() > 0
            coords[:, r], labels[:, r] = error_clicks(predicted, truth)
            all_coords.append(coords.copy())
            all_labels.append(labels.copy())
    return np.concatenate(all_coords), np.concatenate(all_labels)


def _shard(batch: list[TrainImage], rank: int, world: int) -> list[int]:
    """Positions of this rank's images in the global batch: ``rank, rank + world, ...``."""
    return list(range(rank, len(batch), world))


def train_method(
    method: str,
    masks_parquet: str | Path,
    cache_dir: str | Path | None,
    out_checkpoint: str | Path,
    out_summary: str | Path,
    *,
    config: Mapping[str, Any],
    threads: int = 1,
    state_dir: str | Path | None = None,
    fingerprint: str = "",
    text_parquet: str | Path | None = None,
) -> dict[str, Any]:
    """Train one method on the train split (1..N processes).

    Args:
        method: Method name (must train; see :mod:`segsam.methods`).
        masks_parquet: The index's masks table.
        cache_dir: Embedding cache folder of the method's frozen encoder;
            None for a method that reads the slices' images (its encoder
            trains, or a prompt-free network).
        out_checkpoint: State dict of the trained sub-modules (atomic write).
        out_summary: JSON with losses, timings, parameter counts, MLflow run id.
        config: The whole validated config.
        threads: torch intra-op threads.
        state_dir: Folder of the resume state (written every
            ``train.checkpoint_every`` steps and at each epoch's end; removed
            when training finishes). ``None``: no resume.
        fingerprint: Identifies the settings and code of this training; a
            saved state with another fingerprint is ignored.
        text_parquet: Class text embeddings (``embed_text``), for methods with T2VSE.

    Returns:
        The summary.

    Raises:
        DataError: zero-shot method, empty train split, or no cache for a frozen-encoder method.
        ConfigError: a global batch not divisible by the number of processes.
    """
    spec: MethodSpec = get_method(method)
    if not spec.trains:
        raise DataError(f"method {method!r} is zero-shot and has no train stage")
    cfg = config["train"]
    context = DistContext.from_env()
    context.init()
    batch_size = int(cfg["batch_size"])
    if batch_size % context.world_size:
        raise ConfigError(
            f"config key 'train.batch_size': {batch_size} images per step do not split over "
            f"{context.world_size} processes"
        )
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))

    table = pd.read_parquet(masks_parquet)
    train_table = table[table["split"] == "train"]
    if train_table.empty:
        raise DataError(f"{masks_parquet}: the train split is empty")
    vocabulary = Vocabulary.read(config["vocabulary"])
    num_classes = len(vocabulary)
    size = int(config["encoder"]["image_size"])
    images = load_train_images(train_table, vocabulary, size)
    prompt_free = spec.prompt_free
    if spec.encoder_frozen and cache_dir is None:
        raise DataError(f"method {method!r} trains from the embedding cache: pass its folder (cache_dir)")
    store = EmbeddingStore.open(cache_dir, train_table["case"].unique()) if spec.encoder_frozen else None
    text = (
        torch.from_numpy(load_class_embeddings(text_parquet, vocabulary)).to(context.device) if spec.has_t2vse else None
    )

    model = build_method_model(spec, config, num_classes, None if text is None else text.shape[1]).to(context.device)
    n_train, n_frozen = parameter_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = make_optimiser(params, float(cfg["lr"]))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=list(cfg["lr_milestones"]), gamma=float(cfg["lr_gamma"])
    )
    forward: nn.Module = model
    if context.world_size > 1:
        forward = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    steps_per_epoch = (len(images) + batch_size - 1) // batch_size
    every = int(cfg["checkpoint_every"])
    clicks_per_prompt = int(cfg["iterative_clicks"])
    micro_batch = int(cfg["micro_batch"])
    autocast = torch.autocast(
        context.device.type, dtype=torch.bfloat16, enabled=bool(cfg["bf16"]) and context.device.type == "cuda"
    )

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
        return trained_state(model)

    def snapshot() -> None:
        state.rng_state = rng.bit_generator.state
        state.torch_rng = torch.get_rng_state()
        state.model = trained_weights()
        state.optimiser = optimiser.state_dict()
        state.scheduler = scheduler.state_dict()
        if context.is_main and state_dir:
            save_state(state_dir, state)
        context.barrier()

    def semantic_chunk_loss(batch: list[TrainImage], chunk: list[int]) -> tuple[dict[str, torch.Tensor], int]:
        """Prompt-free: the loss terms (means) of the images at positions ``chunk``, and their number."""
        pixels = torch.stack([prepare_image(read_png(batch[i].image), size)[0] for i in chunk]).to(context.device)
        labels = torch.stack([label_map(batch[i]) for i in chunk]).to(context.device)
        with autocast:
            out = forward(pixels)
        return model.semantic_loss(out, labels, weights=config["loss"]), len(chunk)

    def chunk_loss(
        batch: list[TrainImage], prompts: list[tuple], chunk: list[int]
    ) -> tuple[dict[str, torch.Tensor], int]:
        """The loss terms (means) of the prompts of the images at positions ``chunk``, and their number."""
        if prompt_free:
            return semantic_chunk_loss(batch, chunk)
        targets = torch.cat([prompts[i][0] for i in chunk]).unsqueeze(1).float().to(context.device)
        kinds = np.concatenate([prompts[i][1] for i in chunk])
        classes = torch.from_numpy(np.concatenate([batch[i].classes[prompts[i][4]] for i in chunk])).to(context.device)
        presence = torch.cat([presence_targets(batch[i], prompts[i][4], num_classes) for i in chunk]).to(context.device)
        # one entry per image, prompt i of the chunk decodes image image_index[i]
        image_index = torch.repeat_interleave(
            torch.arange(len(chunk)), torch.tensor([len(prompts[i][1]) for i in chunk])
        ).to(context.device)
        if store is not None:  # frozen encoder: the cached embeddings
            embeddings = store.get([batch[i].image for i in chunk]).to(context.device)
        else:  # the encoder trains: the images, encoded inside the forward pass
            embeddings = torch.stack(
                [encoder_input(read_png(batch[i].image), size, spec.encoder)[0] for i in chunk]
            ).to(context.device)
        boxes = np.concatenate([prompts[i][2] for i in chunk])
        points = np.concatenate([prompts[i][3] for i in chunk])
        clicks = None
        if clicks_per_prompt:
            # R + 1 rounds stacked: the loss is the mean over rounds, in one pass through DDP
            with autocast:
                click_embeddings = embeddings
                if store is None:
                    with torch.no_grad():
                        click_embeddings = model.encode(embeddings)
                clicks = add_error_clicks(
                    model, click_embeddings, kinds, boxes, points, targets, text, clicks_per_prompt, image_index
                )
            rounds = clicks_per_prompt + 1
            image_index = image_index.repeat(rounds)
            kinds, boxes, points = np.tile(kinds, rounds), np.tile(boxes, (rounds, 1)), np.tile(points, (rounds, 1))
            targets, classes, presence = (
                targets.repeat(rounds, 1, 1, 1),
                classes.repeat(rounds),
                presence.repeat(rounds, 1),
            )
        with autocast:
            out = forward(embeddings, kinds, boxes, points, text, clicks=clicks, image_index=image_index)
        return model.loss(out, targets, classes, presence, weights=config["loss"]), len(kinds)

    with start_run(config, "train", method, run_id=state.mlflow_run_id) as run:
        import mlflow

        if run is not None:
            state.mlflow_run_id = run.info.run_id
            if state.global_step == 0:
                mlflow.log_params(
                    {
                        "trainable_params": n_train,
                        "frozen_params": n_frozen,
                        "train_images": len(images),
                        "world_size": context.world_size,
                    }
                )
        model.train()
        resumed_mid_epoch = bool(state.order)
        if state.rng_state:  # resumed: continue the prompt-sampling stream where it stopped
            rng.bit_generator.state = state.rng_state
        for epoch in range(state.epoch, int(cfg["epochs"])):
            sums: dict[str, float] = {}
            if not resumed_mid_epoch:
                state.order = rng.permutation(len(images)).tolist()
                state.step_in_epoch = 0
                state.epoch = epoch
                state.epoch_seconds = 0.0
            else:  # the running sums and time of the interrupted epoch's first steps
                sums.update(state.epoch_sums)
            resumed_mid_epoch = False
            epoch_start = time.perf_counter() - state.epoch_seconds
            bar = tqdm(
                range(state.step_in_epoch, steps_per_epoch),
                desc=f"train {method} epoch {epoch + 1}",
                unit="step",
                mininterval=2.0,
                disable=not context.is_main,
            )
            for b in bar:
                step_start = time.perf_counter()
                batch = [images[i] for i in state.order[b * batch_size : (b + 1) * batch_size]]
                if prompt_free:  # whole label maps, no prompts: the loss is a mean over images
                    prompts, n_global = [], len(batch)
                else:
                    prompts = [
                        simulate_prompts(
                            item.masks,
                            int(cfg["masks_per_image"]),
                            int(cfg["box_jitter_px"]),
                            float(cfg["point_fraction"]),
                            rng,
                        )
                        for item in batch
                    ]
                    n_global = sum(len(p[1]) for p in prompts) * (clicks_per_prompt + 1)
                mine = _shard(batch, context.rank, context.world_size)
                optimiser.zero_grad(set_to_none=True)
                weighted: dict[str, float] = {}
                n_mine = 0
                chunks = [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]
                for c, chunk in enumerate(chunks):
                    # gradients accumulate over the micro-batches; DDP all-reduces after the last one only
                    last = c == len(chunks) - 1
                    with contextlib.nullcontext() if last or context.world_size == 1 else forward.no_sync():
                        losses, n = chunk_loss(batch, prompts, chunk)
                        # each chunk's mean scaled so that the sum over chunks and DDP's average over
                        # ranks give the mean over the global batch
                        (losses["loss"] * (n * context.world_size / n_global)).backward()
                    for k, v in losses.items():
                        weighted[k] = weighted.get(k, 0.0) + float(v.detach()) * n
                    n_mine += n
                if cfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]))
                optimiser.step()
                names = sorted(weighted)
                terms = torch.tensor([weighted[k] for k in names] + [n_mine], dtype=torch.float64)
                terms = context.all_reduce_sum(terms)
                values = {k: float(terms[i] / terms[-1]) for i, k in enumerate(names)}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v * float(terms[-1])
                sums["_prompts"] = sums.get("_prompts", 0.0) + float(terms[-1])
                state.step_in_epoch = b + 1
                state.global_step += 1
                if run is not None:
                    mlflow.log_metrics(
                        {f"step/{k}": v for k, v in values.items()}
                        | {"step/images_per_s": len(batch) / max(time.perf_counter() - step_start, 1e-9)},
                        step=state.global_step,
                    )
                bar.set_postfix(loss=f"{values['loss']:.3f}")
                if every and state.global_step % every == 0 and state.step_in_epoch < steps_per_epoch:
                    state.epoch_sums = dict(sums)
                    state.epoch_seconds = time.perf_counter() - epoch_start
                    snapshot()
            epoch_time = time.perf_counter() - epoch_start
            state.seconds += epoch_time
            record = {k: v / max(sums["_prompts"], 1.0) for k, v in sums.items() if k != "_prompts"}
            record.update(
                {
                    "epoch": epoch + 1,
                    "lr": optimiser.param_groups[0]["lr"],
                    "images_per_s": len(images) / max(epoch_time, 1e-9),
                }
            )
            state.history.append(record)
            if run is not None:
                mlflow.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            scheduler.step()
            state.epoch = epoch + 1
            state.order = []
            state.step_in_epoch = 0
            state.epoch_sums, state.epoch_seconds = {}, 0.0
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
