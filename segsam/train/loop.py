"""Training of one method (from cached embeddings, or from images), tracked in MLflow.

Per step: ``batch_size`` training slices (the global batch over all
processes; each process reads its share through a DataLoader,
:mod:`segsam.train.stream`, and runs it ``micro_batch`` images at a time,
accumulating the gradients, so memory grows with the micro-batch, not the
batch or the train split). For each slice, up to ``masks_per_image`` of its
masks, each prompted by a box or a point (:func:`segsam.train.batch.simulate_prompts`,
seeded by the slice's place in the epoch, so that the prompts do not depend on
the number of processes); the classes
of the image's masks that were *not* prompted are the presence targets of
SAWD's unprompted branch. With ``train.iterative_clicks`` = R > 0, each prompt
is followed by R corrective clicks
(:func:`segsam.train.prompts.add_error_clicks`) and the loss is the mean over
the R + 1 rounds. Every method is a
:class:`~segsam.models.segsam_net.PromptableModel`; its loss
(:class:`~segsam.models.losses.MethodLoss`, built once) is docs/methods.md#loss's
``L_SAGD (+ L_SAWD + lambda * L_CMSA)`` with the weights of the ``loss``
config section. Adam (:func:`make_optimiser`) with the lr halved
(``lr_gamma``) after each epoch in ``lr_milestones``.

Methods whose image encoder trains (SAM-Med2D and Med-SA adapters, MedSAM's
whole encoder), and frozen-encoder methods while ``cache.enabled`` is off,
read each slice's image (:func:`~segsam.models.preprocess.encoder_input`) and
encode it inside the model's forward pass, once per image for all of its
prompts; the trained encoder parameters are saved with the checkpoint.

Prompt-free networks (``unet``, ``unetr``: the conventional rows of table 2)
go through the same loop, batches, DDP, resume and tracking, but read each
slice's image (:func:`~segsam.models.preprocess.prepare_image`) instead of a
cached embedding and learn its label map (:func:`~segsam.train.batch.label_map`)
with CE + dice over C + 1 classes (:class:`~segsam.models.losses.PromptFreeLoss`);
they draw no prompts. PG-SAM (:mod:`segsam.models.pg_sam`) is trained the same
way, from its frozen encoder's cached embeddings (or, on ViT-B with LoRA, from
the images) and the class text, with the loss averaged over its decoding rounds.

After the last step, SAWD's class head is fitted again to the trained features
(:mod:`segsam.train.head_refit`, ``train.class_head_refit``; rank 0, before the
checkpoint is written).

``train.label_fraction`` < 1 trains on a seeded subset of the training cases
(:mod:`segsam.train.subset`); the other training slices are not read.

:func:`train` runs a :class:`~segsam.train.job.TrainJob` through a
:class:`Trainer`, in named steps: set-up (its constructor), :meth:`Trainer.step`,
:meth:`Trainer.end_epoch` and :meth:`Trainer.finish`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.config import reads_cache
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.errors import ConfigError, DataError
from segsam.methods import MethodSpec, get_method
from segsam.models.build import parameter_counts
from segsam.models.losses import MethodLoss, PromptFreeLoss
from segsam.models.method_model import build_method_model, trained_state
from segsam.text.cache import load_class_embeddings
from segsam.tracking import log_index, start_run
from segsam.train.batch import PromptBatch, PromptSet, TrainImage, label_map, simulate_prompts
from segsam.train.checkpoint import TrainState, clear_state, load_state, save_state
from segsam.train.dist import DistContext
from segsam.train.head_refit import refit_class_head
from segsam.train.heldout import HeldOut
from segsam.train.job import TrainJob
from segsam.train.prompts import add_error_clicks
from segsam.train.stream import EpochShard, TrainSlices, prompt_rng, train_loader
from segsam.train.subset import label_subset

log = logging.getLogger(__name__)

__all__ = ["TrainSettings", "EpochTally", "Trainer", "make_optimiser", "train"]


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


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` config section, typed (see ``config/config.yaml`` for each key)."""

    seed: int
    epochs: int
    batch_size: int
    micro_batch: int
    masks_per_image: int
    box_jitter_px: int
    point_fraction: float
    iterative_clicks: int
    lr: float
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    grad_clip: float | None
    bf16: bool
    checkpoint_every: int
    label_fraction: float = 1.0
    workers: int = 0

    @classmethod
    def from_config(cls, train: Mapping[str, Any]) -> TrainSettings:
        """Read the validated ``train`` section."""
        return cls(
            seed=int(train["seed"]),
            epochs=int(train["epochs"]),
            batch_size=int(train["batch_size"]),
            micro_batch=int(train["micro_batch"]),
            masks_per_image=int(train["masks_per_image"]),
            box_jitter_px=int(train["box_jitter_px"]),
            point_fraction=float(train["point_fraction"]),
            iterative_clicks=int(train["iterative_clicks"]),
            lr=float(train["lr"]),
            lr_milestones=tuple(train["lr_milestones"]),
            lr_gamma=float(train["lr_gamma"]),
            grad_clip=float(train["grad_clip"]) if train["grad_clip"] else None,
            bf16=bool(train["bf16"]),
            checkpoint_every=int(train["checkpoint_every"]),
            label_fraction=float(train.get("label_fraction", 1.0)),
            workers=int(train.get("workers", 0)),
        )


@dataclass
class EpochTally:
    """The running loss sums of an epoch and the time it started.

    Attributes:
        sums: Each loss term summed over the epoch's prompts (images, when
            prompt-free), weighted by their number; ``_prompts``: that number.
        start: ``time.perf_counter()`` at the epoch's start, less the time of
            the steps run before a resume.
    """

    sums: dict[str, float]
    start: float

    def add(self, values: Mapping[str, float], count: float) -> None:
        """Add one step's loss means over ``count`` prompts."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * count
        self.sums["_prompts"] = self.sums.get("_prompts", 0.0) + count

    def means(self) -> dict[str, float]:
        """Each loss term's mean over the epoch's prompts."""
        return {k: v / max(self.sums["_prompts"], 1.0) for k, v in self.sums.items() if k != "_prompts"}


class Trainer:
    """One process's part of a training job: set-up here, then :meth:`run`.

    Set-up joins the process group, reads the train split, the embedding
    cache and the class text, builds the model, its loss, the optimiser, the
    lr schedule and the DDP wrapper, and loads the resume state when one
    matches the job's fingerprint.

    Args:
        job: What to train and where the results go.
        spec: The job's method (it trains).

    Raises:
        ConfigError: A global batch not divisible by the number of processes.
        DataError: An empty train split, or no cache for a frozen-encoder method.
    """

    def __init__(self, job: TrainJob, spec: MethodSpec) -> None:
        self.job = job
        self.spec = spec
        self.settings = TrainSettings.from_config(job.config["train"])
        self.context = DistContext.from_env()
        self.context.init()
        if self.settings.batch_size % self.context.world_size:
            raise ConfigError(
                f"config key 'train.batch_size': {self.settings.batch_size} images per step do not split over "
                f"{self.context.world_size} processes"
            )
        torch.set_num_threads(job.threads)
        torch.manual_seed(self.settings.seed)
        self.rng = np.random.default_rng(self.settings.seed)
        self.run_handle: Any = None  # the MLflow run while :meth:`run` runs (rank 0 only)
        self._read_data()
        self._build_model()
        self.state = self._resume()

    def _read_data(self) -> None:
        """The train split's images and masks (the ``train.label_fraction`` subset of its cases), the embedding
        cache (frozen encoder) and the class text (T2VSE, PG-SAM's text priors)."""
        job, spec = self.job, self.spec
        table = pd.read_parquet(job.masks_parquet)
        train_table = table[table["split"] == "train"]
        if train_table.empty:
            raise DataError(f"{job.masks_parquet}: the train split is empty")
        train_table = label_subset(train_table, self.settings.label_fraction, self.settings.seed)
        self.train_cases = sorted(train_table["case"].unique())
        vocabulary = Vocabulary.from_config(job.config)  # with vocabulary_extra
        self.num_classes = len(vocabulary)
        self.image_size = int(job.config["encoder"]["image_size"])
        cached = reads_cache(job.config, spec.name)
        pixels = "plain" if spec.prompt_free else (None if cached else spec.encoder)
        self.slices = TrainSlices(train_table, vocabulary, self.image_size, pixels=pixels)
        self.train_table = train_table  # logged as the run's dataset
        if cached and job.cache_dir is None:
            raise DataError(f"method {spec.name!r} trains from the embedding cache: pass its folder (cache_dir)")
        self.store = EmbeddingStore.open(job.cache_dir, train_table["case"].unique()) if cached else None
        self.text = None
        if spec.needs_text:
            self.text = torch.from_numpy(load_class_embeddings(job.text_parquet, vocabulary)).to(self.context.device)
        self.steps_per_epoch = (len(self.slices) + self.settings.batch_size - 1) // self.settings.batch_size
        self.heldout = None
        if spec.has_sawd and spec.prompted and self.store is not None and self.context.is_main:
            limit = int(job.config["train"]["heldout_images"])
            self.heldout = HeldOut.from_index(table, vocabulary, self.image_size, job.cache_dir, limit)

    def _build_model(self) -> None:
        """The model (seeded), its loss, Adam, the lr schedule, and the DDP wrapper with several processes."""
        text_dim = None if self.text is None else self.text.shape[1]
        self.model = build_method_model(self.spec, self.job.config, self.num_classes, text_dim).to(self.context.device)
        self.n_train, self.n_frozen = parameter_counts(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimiser = make_optimiser(self.params, self.settings.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimiser, milestones=list(self.settings.lr_milestones), gamma=self.settings.lr_gamma
        )
        self.forward_module: nn.Module = self.model  # what the forward passes go through: the model or its DDP wrapper
        if self.context.world_size > 1:
            self.forward_module = nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=True)
        weights = self.job.config["loss"]
        self.loss = PromptFreeLoss(weights) if not self.spec.prompted else MethodLoss.for_model(self.model, weights)

    def _resume(self) -> TrainState:
        """The saved state matching the job's fingerprint, laid over the model and optimiser; else a fresh one."""
        job = self.job
        state = load_state(job.state_dir, job.fingerprint) if job.state_dir else None
        if state is None:
            return TrainState(fingerprint=job.fingerprint)
        self.model.load_state_dict(state.model, strict=False)
        self.optimiser.load_state_dict(state.optimiser)
        self.scheduler.load_state_dict(state.scheduler)
        if state.torch_rng is not None:
            torch.set_rng_state(state.torch_rng)
        return state

    def _autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA when ``train.bf16`` is set; disabled otherwise."""
        device = self.context.device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.settings.bf16 and device == "cuda")

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs inside the job's MLflow run, then :meth:`finish`.

        Returns:
            The summary (:meth:`finish`).
        """
        state = self.state
        with start_run(self.job.config, "train", self.job.method, run_id=state.mlflow_run_id) as run:
            self.run_handle = run
            self._log_params()
            self.model.train()
            resumed_mid_epoch = bool(state.order)
            if state.rng_state:  # resumed: continue the stream of epoch orders where it stopped
                self.rng.bit_generator.state = state.rng_state
            for epoch in range(state.epoch, self.settings.epochs):
                self.run_epoch(epoch, resumed_mid_epoch)
                resumed_mid_epoch = False
            return self.finish()

    def _log_params(self) -> None:
        """Remember the MLflow run in the state; log the run's sizes once, at its start."""
        if self.run_handle is None:
            return
        import mlflow

        self.state.mlflow_run_id = self.run_handle.info.run_id
        if self.state.global_step == 0:
            mlflow.log_params(
                {
                    "trainable_params": self.n_train,
                    "frozen_params": self.n_frozen,
                    "train_images": len(self.slices),
                    "loader_workers": self.settings.workers,
                    "world_size": self.context.world_size,
                    "label_fraction": self.settings.label_fraction,
                    "train_cases": len(self.train_cases),
                }
            )
            mlflow.log_dict({"train_cases": self.train_cases}, "train_cases.json")
            name = f"{self.job.config['dataset']['name']}/train"
            log_index(self.train_table, self.job.masks_parquet, name=name, context="training")

    def run_epoch(self, epoch: int, resumed: bool) -> None:
        """Epoch ``epoch`` (0-based) from its first step, or from where a resumed state stopped."""
        tally = self.start_epoch(epoch, resumed)
        shard = self.epoch_shard()
        loader = train_loader(self.slices, shard, self.settings.workers, self.context.device.type == "cuda")
        bar = tqdm(
            zip(range(shard.start, shard.steps), loader),
            total=len(shard),
            desc=f"train {self.job.method} epoch {epoch + 1}",
            unit="step",
            mininterval=2.0,
            disable=not self.context.is_main,
        )
        for b, items in bar:
            values = self.step(b, items, shard.read_positions(b), tally, stand_in=shard.stands_in(b))
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        self.end_epoch(epoch, tally)

    def epoch_shard(self) -> EpochShard:
        """This rank's images of each remaining step of the current epoch."""
        state, context = self.state, self.context
        return EpochShard(
            state.order, self.settings.batch_size, context.rank, context.world_size, start=state.step_in_epoch
        )

    def start_epoch(self, epoch: int, resumed: bool) -> EpochTally:
        """Draw the epoch's image order, or take up the interrupted epoch's sums and time when ``resumed``."""
        state = self.state
        sums: dict[str, float] = {}
        if not resumed:
            state.order = self.rng.permutation(len(self.slices)).tolist()
            state.step_in_epoch = 0
            state.epoch = epoch
            state.epoch_seconds = 0.0
        else:
            sums.update(state.epoch_sums)
        return EpochTally(sums=sums, start=time.perf_counter() - state.epoch_seconds)

    def step(
        self, b: int, items: list[TrainImage], positions: list[int], tally: EpochTally, stand_in: bool = False
    ) -> dict[str, float]:
        """One optimiser step on the epoch's ``b``-th global batch; a snapshot every ``train.checkpoint_every`` steps.

        Args:
            b: The step's place in the epoch.
            items: This rank's images of the global batch.
            positions: Their positions in the epoch's order (they seed their prompts).
            tally: The epoch's running sums.
            stand_in: ``items`` are another rank's image, read only so that this rank
                joins DDP's all-reduce; their gradient and losses weigh 0.

        Returns:
            The step's loss terms, means over the global batch's prompts (images, when prompt-free).
        """
        step_start = time.perf_counter()
        settings, state = self.settings, self.state
        n_batch = min(settings.batch_size, len(state.order) - b * settings.batch_size)
        prompts = self.draw_prompts(items, positions)
        if not self.spec.prompted:  # whole label maps, no prompts: the loss is a mean over images
            n_global = n_batch
        else:
            n_local = 0 if stand_in else sum(len(p) for p in prompts) * (settings.iterative_clicks + 1)
            n_global = int(self.context.all_reduce_sum(torch.tensor([n_local], dtype=torch.float64))[0])
        weighted, n_mine = self.accumulate_gradients(items, prompts, n_global, stand_in)
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, settings.grad_clip)
        self.optimiser.step()
        values, n_all = self.reduce_losses(weighted, n_mine)
        tally.add(values, n_all)
        state.step_in_epoch = b + 1
        state.global_step += 1
        self._log_step(values, n_batch, step_start)
        every = settings.checkpoint_every
        if every and state.global_step % every == 0 and state.step_in_epoch < self.steps_per_epoch:
            state.epoch_sums = dict(tally.sums)
            state.epoch_seconds = time.perf_counter() - tally.start
            self.snapshot()
        return values

    def draw_prompts(self, items: list[TrainImage], positions: list[int]) -> list[PromptSet]:
        """The prompts of each of this rank's images, seeded by its position in the epoch; none when prompt-free."""
        if not self.spec.prompted:
            return []
        s, epoch = self.settings, self.state.epoch
        return [
            simulate_prompts(
                item.masks, s.masks_per_image, s.box_jitter_px, s.point_fraction, prompt_rng(s.seed, epoch, position)
            )
            for item, position in zip(items, positions)
        ]

    def accumulate_gradients(
        self, items: list[TrainImage], prompts: list[PromptSet], n_global: int, stand_in: bool = False
    ) -> tuple[dict[str, float], int]:
        """This rank's images of the batch, ``micro_batch`` at a time, gradients accumulated.

        DDP all-reduces after the last micro-batch only (``no_sync`` before).
        Each micro-batch's mean loss is scaled so that the sum over
        micro-batches and DDP's average over ranks give the gradient of the
        mean over the global batch (``n_global`` prompts, or images).
        A ``stand_in`` image runs the passes but counts for nothing.

        Returns:
            (each loss term summed over this rank's prompts, weighted by their
            number; that number).
        """
        world = self.context.world_size
        self.optimiser.zero_grad(set_to_none=True)
        weighted: dict[str, float] = {}
        n_mine = 0
        micro = self.settings.micro_batch
        chunks = [list(range(i, min(i + micro, len(items)))) for i in range(0, len(items), micro)]
        for c, chunk in enumerate(chunks):
            last = c == len(chunks) - 1
            with contextlib.nullcontext() if last or world == 1 else self.forward_module.no_sync():
                losses, n = self.chunk_loss(items, prompts, chunk)
                n = 0 if stand_in else n
                (losses["loss"] * (n * world / n_global)).backward()
            for k, v in losses.items():
                weighted[k] = weighted.get(k, 0.0) + float(v.detach()) * n
            n_mine += n
        return weighted, n_mine

    def chunk_loss(
        self, items: list[TrainImage], prompts: list[PromptSet], chunk: list[int]
    ) -> tuple[dict[str, torch.Tensor], int]:
        """The loss terms (means) of this rank's images at ``chunk``, and their prompt count."""
        chosen = [items[i] for i in chunk]
        if not self.spec.prompted:
            return self._prompt_free_loss(chosen)
        return self._prompted_loss(chosen, [prompts[i] for i in chunk])

    def _prompt_free_loss(self, items: list[TrainImage]) -> tuple[dict[str, torch.Tensor], int]:
        """CE + dice of the images' label maps (PG-SAM: mean over its rounds); the count is the number of images."""
        device = self.context.device
        labels = torch.stack([label_map(item) for item in items]).to(device)
        if self.spec.prompt_free:
            pixels = torch.stack([item.pixels for item in items]).to(device, non_blocking=True)
            with self._autocast():
                out = self.forward_module(pixels)
        else:  # PG-SAM: cached embeddings (or images for its own encoder) and the class text
            with self._autocast():
                out = self.forward_module(self._embeddings(items), text=self.text)
        return self.loss(out, labels), len(items)

    def _prompted_loss(self, items: list[TrainImage], prompts: list[PromptSet]) -> tuple[dict[str, torch.Tensor], int]:
        """The method's loss of the images' prompts (R + 1 rounds stacked with corrective clicks)."""
        inputs = PromptBatch.gather(
            items, prompts, self.num_classes, with_class_masks="sawd_sem" in self.spec.components
        ).to(self.context.device)
        embeddings = self._embeddings(items)
        clicks = None
        rounds = self.settings.iterative_clicks
        if rounds:
            # R + 1 rounds stacked: the loss is the mean over rounds, in one pass through DDP
            clicks = self._error_clicks(embeddings, inputs)
            inputs = inputs.repeat(rounds + 1)
        with self._autocast():
            out = self.forward_module(
                embeddings,
                inputs.is_point,
                inputs.boxes,
                inputs.points,
                self.text,
                clicks=clicks,
                image_index=inputs.image_index,
            )
        return self.loss(out, inputs.targets, inputs.classes, inputs.presence, inputs.class_masks), len(inputs)

    def _embeddings(self, items: list[TrainImage]) -> torch.Tensor:
        """One entry per image: the cached embeddings (frozen encoder, cache on), or the images the loader
        prepared, encoded in the forward pass."""
        if self.store is not None:
            return self.store.get([item.image for item in items]).to(self.context.device)
        return torch.stack([item.pixels for item in items]).to(self.context.device, non_blocking=True)

    def _error_clicks(self, embeddings: torch.Tensor, inputs: PromptBatch) -> tuple[np.ndarray, np.ndarray]:
        """The corrective clicks of ``train.iterative_clicks`` rounds (no gradients; images encoded once)."""
        with self._autocast():
            click_embeddings = embeddings
            if self.store is None:
                with torch.no_grad():
                    click_embeddings = self.model.encode(embeddings)
            return add_error_clicks(
                self.model,
                click_embeddings,
                inputs.is_point,
                inputs.boxes,
                inputs.points,
                inputs.targets,
                self.text,
                self.settings.iterative_clicks,
                inputs.image_index,
            )

    def reduce_losses(self, weighted: Mapping[str, float], n_mine: int) -> tuple[dict[str, float], float]:
        """The step's loss means over all ranks, and the global prompt count."""
        names = sorted(weighted)
        terms = torch.tensor([weighted[k] for k in names] + [n_mine], dtype=torch.float64)
        terms = self.context.all_reduce_sum(terms)
        return {k: float(terms[i] / terms[-1]) for i, k in enumerate(names)}, float(terms[-1])

    def _log_step(self, values: Mapping[str, float], n_images: int, step_start: float) -> None:
        """The step's losses and throughput in MLflow (rank 0)."""
        if self.run_handle is None:
            return
        import mlflow

        mlflow.log_metrics(
            {f"step/{k}": v for k, v in values.items()}
            | {"step/images_per_s": n_images / max(time.perf_counter() - step_start, 1e-9)},
            step=self.state.global_step,
        )

    def snapshot(self) -> None:
        """Save the resume state (rank 0, when the job has a state folder); every rank waits for it."""
        state = self.state
        state.rng_state = self.rng.bit_generator.state
        state.torch_rng = torch.get_rng_state()
        state.model = trained_state(self.model)
        state.optimiser = self.optimiser.state_dict()
        state.scheduler = self.scheduler.state_dict()
        if self.context.is_main and self.job.state_dir:
            save_state(self.job.state_dir, state)
        self.context.barrier()

    def end_epoch(self, epoch: int, tally: EpochTally) -> None:
        """Record the epoch (history, MLflow, log), step the lr schedule and save a snapshot."""
        state = self.state
        epoch_time = time.perf_counter() - tally.start
        state.seconds += epoch_time
        record = tally.means()
        record.update(
            {
                "epoch": epoch + 1,
                "lr": self.optimiser.param_groups[0]["lr"],
                "images_per_s": len(self.slices) / max(epoch_time, 1e-9),
            }
        )
        if self.heldout is not None:
            record["heldout_class_acc"] = self.heldout.class_accuracy(self.model, self.text, self.context.device)
        state.history.append(record)
        if self.run_handle is not None:
            import mlflow

            mlflow.log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        self.scheduler.step()
        state.epoch = epoch + 1
        state.order = []
        state.step_in_epoch = 0
        state.epoch_sums, state.epoch_seconds = {}, 0.0
        self.snapshot()

    def refit_class_head(self) -> dict[str, float] | None:
        """Fit SAWD's class head again to the trained features of ``train.class_head_refit`` training slices
        (:mod:`segsam.train.head_refit`); its figures, logged to MLflow. None when off or without SAWD."""
        limit = int(self.job.config["train"]["class_head_refit"])
        if not (self.spec.has_sawd and self.spec.prompted) or limit == 0:
            return None
        start = time.perf_counter()
        rng = np.random.default_rng(self.settings.seed)
        items = [self.slices[int(i)] for i in np.sort(rng.permutation(len(self.slices))[:limit])]
        device = self.context.device
        result = refit_class_head(self.model, items, lambda item: self._embeddings([item]), self.text, device, rng)
        record = {k: float(v) for k, v in asdict(result).items()}
        record["seconds"] = time.perf_counter() - start
        trained = self.train_table["class_id"].nunique()
        if result.classes < trained:
            log.warning(
                "the class-head refit saw %d of the %d training classes (train.class_head_refit: %d slices); "
                "the others can only lose: raise it, or set 0 for a run long enough to train the head",
                result.classes,
                trained,
                limit,
            )
        if self.heldout is not None:
            record["heldout_class_acc"] = self.heldout.class_accuracy(self.model, self.text, device)
        log.info("class head refitted: %s", ", ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if self.run_handle is not None:
            import mlflow

            mlflow.log_metrics({f"refit/{k}": v for k, v in record.items()})
        return record

    def finish(self) -> dict[str, Any]:
        """Refit SAWD's class head, write the checkpoint and summary, log them to MLflow and remove the resume
        state (rank 0).

        Returns:
            The summary: losses per epoch, timings, parameter counts, the class-head refit, MLflow run id.
        """
        job, state = self.job, self.state
        refit = self.refit_class_head() if self.context.is_main else None
        summary = {
            "method": job.method,
            "train_images": len(self.slices),
            "train_cases": len(self.train_cases),
            "label_fraction": self.settings.label_fraction,
            "steps": state.global_step,
            "seconds": state.seconds,
            "world_size": self.context.world_size,
            "trainable_params": self.n_train,
            "frozen_params": self.n_frozen,
            "history": state.history,
            "class_head_refit": refit,
            "mlflow_run_id": state.mlflow_run_id,
        }
        if self.context.is_main:
            with atomic_path(job.checkpoint) as tmp:
                torch.save(trained_state(self.model), tmp)
            if self.run_handle is not None:
                import mlflow

                mlflow.log_artifact(str(job.checkpoint), artifact_path="checkpoint")
                mlflow.log_dict(dict(job.config), "config.json")
            write_json(job.summary, summary)
            if job.state_dir:
                clear_state(job.state_dir)
        self.context.barrier()
        return summary


def train(job: TrainJob) -> dict[str, Any]:
    """Train one method on the train split (this process's part of a 1..N process job).

    Args:
        job: The method, its inputs and outputs, the config and the resume settings.

    Returns:
        The summary (:meth:`Trainer.finish`).

    Raises:
        DataError: zero-shot method, empty train split, or no cache for a frozen-encoder method.
        ConfigError: a global batch not divisible by the number of processes.
    """
    spec = get_method(job.method)
    if not spec.trains:
        raise DataError(f"method {job.method!r} is zero-shot and has no train stage")
    return Trainer(job, spec).run()
