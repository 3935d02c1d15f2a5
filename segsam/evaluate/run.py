"""Evaluate one method on the saved test prompts (from cached embeddings, or from the images
when its encoder was trained), or a prompt-free network on the same test slices.

:func:`evaluate_method` runs the steps: :func:`set_up` (method, model, embedding cache,
text), :func:`score_slices` (one slice at a time: :func:`prompted_rows` or
:func:`prompt_free_rows`, the 3D planes (:func:`add_planes`) and the example PNGs
(:class:`ExampleFolder`)), :func:`summarise_method`, then :func:`publish_results` (tables,
summary JSON, MLflow).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.config import reads_cache
from segsam.data.io import read_png, write_png
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.errors import DataError
from segsam.evaluate.metrics import dice_scores, distance_summary, hd95_mm, semantic_summarise, summarise
from segsam.evaluate.volume import AXIS, CaseVolumes, case_summary
from segsam.methods import MethodSpec, get_method
from segsam.models.method_model import build_method_model, load_trained, weights_provenance
from segsam.models.pg_sam import PGSam
from segsam.models.preprocess import ResizeInfo, encoder_input, prepare_image
from segsam.models.segsam_net import ModelOutput, PromptableModel
from segsam.text.cache import load_class_embeddings
from segsam.tracking import log_index, start_run

#: Prompts decoded per forward pass (bounds the memory of slices with many masks).
PROMPTS_PER_PASS = 8

log = logging.getLogger(__name__)

#: The ``prompt`` value of a prompt-free network's rows (as in the paper's table 2).
NO_PROMPT = "none"

#: Columns of the per-mask table that :func:`prompted_rows` and :func:`prompt_free_rows` produce
#: (:func:`evaluate_method` puts ``method`` in front).
PER_MASK_COLUMNS = [
    "mask",
    "image",
    "case",
    "modality",
    "class_id",
    "class_name",
    "prompt",
    "dsc",
    "hd95_mm",
    "pred_class_id",
    "sem_dsc",
    "pred_area",
    "gt_area",
]

#: Rows whose predicted masks are written as example PNGs: box prompts, and prompt-free rows.
EXAMPLE_PROMPTS = ("box", NO_PROMPT)


def example_images(prompts: pd.DataFrame, per_modality: int = 2) -> list[str]:
    """Test slices shown in the qualitative figure: per modality, those with the most masks (ties by name)."""
    counts = (
        prompts[prompts["prompt"] == prompts["prompt"].iloc[0]]
        .groupby(["modality", "image"])
        .size()
        .reset_index(name="n")
    )
    counts = counts.sort_values(["modality", "n", "image"], ascending=[True, False, True])
    return counts.groupby("modality").head(per_modality)["image"].tolist()


@dataclass
class Evaluation:
    """What scoring the test slices of one method needs, made once by :func:`set_up`.

    Attributes:
        spec: The method.
        prompts: The saved test prompts (:func:`segsam.evaluate.prompts.make_test_prompts`).
        model: The method's model with its trained weights, in eval mode.
        store: The embedding cache of the frozen encoder; None when the method
            encodes the images itself or is prompt-free.
        vocabulary: The global vocabulary.
        text: C x d_text class text embeddings (methods with T2VSE or PG-SAM's text priors), or None.
        size: Model input side S.
        threshold: Foreground probability threshold of the predicted masks.
    """

    spec: MethodSpec
    prompts: pd.DataFrame
    model: PromptableModel | PGSam
    store: EmbeddingStore | None
    vocabulary: Vocabulary
    text: torch.Tensor | None
    size: int
    threshold: float


@dataclass
class RowMasks:
    """The masks behind a slice's R rows of the per-mask table, on the slice's H x W grid.

    Attributes:
        predicted: R x H x W bool, the prediction scored in row r.
        truth: R x H x W bool, its ground truth.
    """

    predicted: np.ndarray
    truth: np.ndarray

    @classmethod
    def of_regions(cls, regions: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> RowMasks:
        """From :func:`prompt_free_rows`' {mask path: (predicted, truth)}, in its rows' order."""
        return cls(
            np.stack([predicted for predicted, _ in regions.values()]),
            np.stack([truth for _, truth in regions.values()]),
        )


@dataclass
class Summaries:
    """The summary tables of one evaluation.

    Attributes:
        means: Mean DSC per (prompt, modality) with its bootstrap interval
            (mDSC for prompt-free networks; :func:`~segsam.evaluate.metrics.summarise`).
        distances: HD95 (mm) per (prompt, modality) (:func:`~segsam.evaluate.metrics.distance_summary`).
        per_case_3d: 3D DSC and HD95 per prompt (:func:`~segsam.evaluate.volume.case_summary`).
    """

    means: pd.DataFrame
    distances: pd.DataFrame
    per_case_3d: pd.DataFrame


def evaluate_method(
    method: str,
    prompts_parquet: str | Path,
    cache_dir: str | Path | None,
    out_per_mask: str | Path,
    out_summary: str | Path,
    out_examples: str | Path,
    *,
    out_per_case: str | Path,
    config: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    train_summary: str | Path | None = None,
    text_parquet: str | Path | None = None,
    threads: int = 1,
    eval_dataset: str | None = None,
) -> pd.DataFrame:
    """Score every saved test prompt with one method.

    Args:
        method: Method name.
        prompts_parquet: Output of :func:`segsam.evaluate.prompts.make_test_prompts`.
        cache_dir: Embedding cache folder of the method's frozen encoder;
            None when the method encodes the images itself (its encoder
            trained) or is a prompt-free network (see :func:`prompt_free_rows`).
        out_per_mask: Parquet, one row per (mask, prompt) with its DSC and HD95 (mm).
        out_summary: JSON with the per-modality means and the MLflow run ids.
        out_examples: Folder of predicted masks (box prompts, PNG named like the
            ground-truth mask) on the slices of :func:`example_images`.
        out_per_case: Parquet, one row per (prompt, case, class) with the 3D DSC and HD95 (mm)
            of the axial planes stacked (:mod:`segsam.evaluate.volume`).
        config: The whole validated config.
        checkpoint: Trained weights (methods that train), overlaid on the
            pretrained ones.
        train_summary: The training job's summary (links the MLflow runs).
        text_parquet: Class text embeddings, for methods with T2VSE.
        threads: torch intra-op threads.
        eval_dataset: The cross dataset whose prompts these are (table 3); None: the
            training dataset's test split. Names the MLflow run.

    Returns:
        The per-mask table.

    Raises:
        DataError: A trained method without its checkpoint, or a frozen-encoder
            method without its embedding cache.
    """
    spec = get_method(method)
    torch.set_num_threads(max(1, threads))
    train_run = _train_run_id(train_summary)
    tags = {"train_run_id": train_run} if train_run else {}
    # the run spans the whole job: set-up, scoring and writing the results
    with start_run(config, "evaluate", spec.name, extra_tags=tags, eval_dataset=eval_dataset) as run:
        evaluation = set_up(
            spec, config, prompts_parquet, cache_dir=cache_dir, checkpoint=checkpoint, text_parquet=text_parquet
        )
        if run is not None:
            name = f"{eval_dataset or config['dataset']['name']}/test"
            log_index(evaluation.prompts, prompts_parquet, name=name, context="evaluation")
        examples = ExampleFolder(out_examples, example_images(evaluation.prompts))
        start = time.perf_counter()
        per_mask, volumes = score_slices(evaluation, examples)
        seconds = time.perf_counter() - start
        per_case = volumes.table()
        summaries = summarise_method(spec, per_mask, per_case, config["evaluate"])
        outputs = {"per_mask": out_per_mask, "per_case": out_per_case, "summary": out_summary}
        links = {"run": run, "train_run": train_run, "eval_dataset": eval_dataset}
        publish_results(spec, config, per_mask, per_case, summaries, seconds, outputs, examples, links)
    averages = (r for r in summaries.means.itertuples() if r.modality == "avg")
    log.info(
        "%s: %d prompts in %.1f s; %s",
        method,
        len(per_mask),
        seconds,
        "; ".join(f"{r.prompt}/{r.modality}={r.mean:.3f}" for r in averages),
    )
    return per_mask


def set_up(
    spec: MethodSpec,
    config: Mapping[str, Any],
    prompts_parquet: str | Path,
    *,
    cache_dir: str | Path | None,
    checkpoint: str | Path | None,
    text_parquet: str | Path | None,
) -> Evaluation:
    """Read the test prompts and build the method's model with its trained weights.

    Args:
        spec: The method.
        config: The whole validated config.
        prompts_parquet: The saved test prompts.
        cache_dir: Embedding cache of the frozen encoder (read for those methods while ``cache.enabled``).
        checkpoint: Trained weights (required when the method trains).
        text_parquet: Class text embeddings (methods with T2VSE or PG-SAM's text priors).

    Returns:
        Evaluation: Everything :func:`score_slices` needs.

    Raises:
        DataError: A trained method without its checkpoint, or a frozen-encoder
            method without its embedding cache.
    """
    if spec.trains and checkpoint is None:
        raise DataError(f"method {spec.name!r} trains: its checkpoint is required for evaluation")
    prompts = pd.read_parquet(prompts_parquet)
    cached = reads_cache(config, spec.name)
    if cached and cache_dir is None:
        raise DataError(f"method {spec.name!r} is evaluated from the embedding cache: pass its folder (cache_dir)")
    store = EmbeddingStore.open(cache_dir, prompts["case"].unique()) if cached else None
    vocabulary = Vocabulary.from_config(config)  # with vocabulary_extra
    embeddings = torch.from_numpy(load_class_embeddings(text_parquet, vocabulary)) if spec.needs_text else None
    model = build_method_model(spec, config, len(vocabulary), None if embeddings is None else embeddings.shape[1])
    if checkpoint is not None:
        load_trained(model, checkpoint, spec)
    return Evaluation(
        spec=spec,
        prompts=prompts,
        model=model.eval(),
        store=store,
        vocabulary=vocabulary,
        text=embeddings,
        size=int(config["encoder"]["image_size"]),
        threshold=float(config["evaluate"]["threshold"]),
    )


def score_slices(evaluation: Evaluation, examples: ExampleFolder) -> tuple[pd.DataFrame, CaseVolumes]:
    """Score every test slice, in path order (so case by case).

    Args:
        evaluation: From :func:`set_up`.
        examples: Where the example slices' predictions go.

    Returns:
        The per-mask table (``method`` first, then :data:`PER_MASK_COLUMNS`), and the
        3D volumes of the axial slices (the cases before the last one scored already).
    """
    results = []
    volumes = CaseVolumes(evaluation.spec.name)
    with torch.inference_mode():
        slices = evaluation.prompts.groupby("image", sort=True)
        for image, group in tqdm(slices, desc=f"evaluate {evaluation.spec.name}", unit="slice", mininterval=2.0):
            volumes.finish(keep=group["case"].iloc[0])  # slices are sorted by path, so by case: score the cases before
            rows, masks = score_slice(evaluation, image, group)
            results.append(rows)
            add_planes(volumes, group, rows, masks)
            if image in examples.images:
                examples.write(rows, masks)
    per_mask = pd.concat(results, ignore_index=True)
    per_mask.insert(0, "method", evaluation.spec.name)
    return per_mask, volumes


def score_slice(evaluation: Evaluation, image: str, group: pd.DataFrame) -> tuple[pd.DataFrame, RowMasks]:
    """One slice's rows of the per-mask table and their masks (:func:`prompted_rows` or :func:`prompt_free_rows`)."""
    model, size = evaluation.model, evaluation.size
    if evaluation.spec.prompt_free:
        rows, regions = prompt_free_rows(model, image, group, size, evaluation.vocabulary.class_index)
        return rows, RowMasks.of_regions(regions)
    if not evaluation.spec.prompted:  # PG-SAM: its cached embedding, or the image for its own encoder
        inputs = evaluation.store.get([image]) if evaluation.store is not None else None
        if inputs is None:
            inputs = encoder_input(read_png(image), size, evaluation.spec.encoder)[0][None]
        rows, regions = prompt_free_rows(
            model, image, group, size, evaluation.vocabulary.class_index, inputs=inputs, text=evaluation.text
        )
        return rows, RowMasks.of_regions(regions)
    if evaluation.store is not None:
        embedding = evaluation.store.get([image])
    else:  # the method's own encoder: trained, or frozen with the cache off
        embedding = model.encode(encoder_input(read_png(image), size, evaluation.spec.encoder)[0][None])
    return prompted_rows(
        model,
        image,
        group,
        embedding,
        size=size,
        threshold=evaluation.threshold,
        vocabulary=evaluation.vocabulary,
        text=evaluation.text,
    )


def add_planes(volumes: CaseVolumes, group: pd.DataFrame, rows: pd.DataFrame, masks: RowMasks) -> None:
    """Add a slice's scored masks to the 3D volumes of its case, if it is an axial slice.

    Args:
        volumes: The volumes being stacked.
        group: The slice's rows of the test prompts (its plane index and pixel side
            are those of its first row: one slice, one case).
        rows: The slice's rows of the per-mask table.
        masks: Their predicted and ground-truth masks.
    """
    if group["axis"].iloc[0] != AXIS:
        return
    plane, spacing = int(group["slice"].iloc[0]), float(group["spacing_mm"].iloc[0])
    for row, predicted, truth in zip(rows.itertuples(index=False), masks.predicted, masks.truth):
        volumes.add(
            row.prompt, row.case, row.modality, plane, int(row.class_id), row.class_name, spacing, predicted, truth
        )


class ExampleFolder:
    """The example PNGs of one evaluation: written into a hidden staging folder next to
    ``out``, which :meth:`publish` puts in place of ``out`` once everything else is written.

    Args:
        out: The examples folder.
        images: The slices whose predictions are shown (:func:`example_images`).
    """

    def __init__(self, out: str | Path, images: list[str]) -> None:
        self.out = Path(out)
        self.images = set(images)
        self.staging = self.out.parent / f".{self.out.name}.tmp"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def write(self, rows: pd.DataFrame, masks: RowMasks) -> None:
        """Write the predictions of the rows of :data:`EXAMPLE_PROMPTS`, named like their ground-truth mask."""
        for mask_path, prompt, predicted in zip(rows["mask"], rows["prompt"], masks.predicted):
            if prompt in EXAMPLE_PROMPTS:
                write_png(self.staging / Path(mask_path).name, predicted.astype(np.uint8) * 255)

    def publish(self) -> None:
        """Replace ``out`` by the staged folder."""
        shutil.rmtree(self.out, ignore_errors=True)
        os.replace(self.staging, self.out)


def prompted_rows(
    model: PromptableModel,
    image: str,
    group: pd.DataFrame,
    embedding: torch.Tensor,
    *,
    size: int,
    threshold: float,
    vocabulary: Vocabulary,
    text: torch.Tensor | None = None,
) -> tuple[pd.DataFrame, RowMasks]:
    """Score a promptable model on one test slice: one row per (mask, prompt) of the slice.

    The slice's prompts go through the model :data:`PROMPTS_PER_PASS` at a time
    (memory stays flat for slices with many masks); the parts that depend on the
    image only are computed once for all passes
    (:meth:`~segsam.models.segsam_net.PromptableModel.image_context`). SAGD's
    mask logits are mapped back onto the slice and thresholded there (``dsc``,
    ``hd95_mm``). The semantic task (docs/metrics.md#semantic-mdsc): SAWD's mask counts for the true
    class only if its class is right, so ``sem_dsc`` is its DSC when
    ``pred_class_id`` is the true class and 0 otherwise; without SAWD,
    ``pred_class_id`` is -1 and ``sem_dsc`` NaN.

    Args:
        model: A promptable model, in eval mode.
        image: Path of the slice (PNG).
        group: The slice's rows of the test prompts (:data:`~segsam.evaluate.prompts.PROMPT_COLUMNS`).
        embedding: 1 x 256 x h x w, the slice's image embedding.
        size: Model input side.
        threshold: Foreground probability threshold.
        vocabulary: The global vocabulary (class ids of the model's C outputs).
        text: C x d_text class text embeddings, for models with T2VSE.

    Returns:
        (rows with :data:`PER_MASK_COLUMNS`, in the order of ``group``; their SAGD
        predictions and ground-truth masks on the slice's grid).
    """
    targets = np.stack([read_png(p) > 0 for p in group["mask"]])
    info = ResizeInfo.for_shape(targets.shape[1], targets.shape[2], size)
    out = _decode_slice(model, embedding, group, info, text)
    threshold_logit = float(np.log(threshold / (1 - threshold)))
    pred = info.logits_to_original(out.masks[:, 0]) > threshold_logit
    truth = torch.from_numpy(targets)
    frame = group[["mask", "image", "case", "modality", "class_id", "class_name", "prompt"]].copy()
    frame["dsc"] = dice_scores(pred, truth)
    frame["hd95_mm"] = hd95_mm(pred, truth, group["spacing_mm"].to_numpy(np.float64))
    if out.sem_masks is not None and out.class_logits is not None:
        sem_pred = info.logits_to_original(out.sem_masks[:, 0]) > threshold_logit
        predicted = out.class_logits.argmax(1).numpy()
        correct = predicted == np.array([vocabulary.class_index[int(c)] for c in group["class_id"]])
        frame["pred_class_id"] = [vocabulary.ids[i] for i in predicted]
        frame["sem_dsc"] = np.where(correct, dice_scores(sem_pred, truth), 0.0)
    else:
        frame["pred_class_id"] = -1
        frame["sem_dsc"] = np.nan
    frame["pred_area"] = pred.flatten(1).sum(1).numpy()
    frame["gt_area"] = targets.reshape(len(group), -1).sum(1)
    return frame, RowMasks(pred.numpy(), targets)


def _decode_slice(
    model: PromptableModel, embedding: torch.Tensor, group: pd.DataFrame, info: ResizeInfo, text: torch.Tensor | None
) -> ModelOutput:
    """The model's output for every prompt of one slice (model frame), in passes of :data:`PROMPTS_PER_PASS`."""
    is_point = (group["prompt"] == "point").to_numpy()
    boxes = info.box_to_model_coords(group[["x0", "y0", "x1", "y1"]].to_numpy(np.float32))
    points = info.to_model_coords(group[["px", "py"]].to_numpy(np.float32))
    context = model.image_context(embedding, text)
    parts = [
        model(
            context,
            is_point[i : i + PROMPTS_PER_PASS],
            boxes[i : i + PROMPTS_PER_PASS],
            points[i : i + PROMPTS_PER_PASS],
            image_index=np.zeros(min(PROMPTS_PER_PASS, len(group) - i), np.int64),
        )
        for i in range(0, len(group), PROMPTS_PER_PASS)
    ]
    return ModelOutput.concatenate(parts)


def summarise_method(
    spec: MethodSpec, per_mask: pd.DataFrame, per_case: pd.DataFrame, cfg: Mapping[str, Any]
) -> Summaries:
    """The summary tables (prompt-free networks have only the semantic task: their means are mDSC).

    Args:
        spec: The method.
        per_mask: Its per-mask table.
        per_case: Its per-case 3D table.
        cfg: The ``evaluate`` config section (bootstrap, ci, seed).

    Returns:
        Summaries: The means, distances and 3D summaries.
    """
    summarise_rows = semantic_summarise if not spec.prompted else summarise
    means = summarise_rows(per_mask, int(cfg["bootstrap"]), float(cfg["ci"]), int(cfg["seed"]))
    return Summaries(means=means, distances=distance_summary(per_mask), per_case_3d=case_summary(per_case))


def _train_run_id(train_summary: str | Path | None) -> str | None:
    """The MLflow run id of the training job behind an evaluation (None for zero-shot methods)."""
    if train_summary is None:
        return None
    return json.loads(Path(train_summary).read_text(encoding="utf-8")).get("mlflow_run_id")


def publish_results(
    spec: MethodSpec,
    config: Mapping[str, Any],
    per_mask: pd.DataFrame,
    per_case: pd.DataFrame,
    summaries: Summaries,
    seconds: float,
    outputs: Mapping[str, str | Path],
    examples: ExampleFolder,
    links: Mapping[str, Any],
) -> None:
    """Write the tables, the summary JSON and the examples, and log them to the evaluation's MLflow run.

    Args:
        spec: The method.
        config: The whole validated config.
        per_mask: The per-mask table.
        per_case: The per-case 3D table.
        summaries: From :func:`summarise_method`.
        seconds: Time spent scoring.
        outputs: ``per_mask`` and ``per_case`` parquet paths, ``summary`` JSON path.
        examples: The staged example PNGs (put in place last).
        links: ``run`` (the active MLflow run, or None on other ranks), ``train_run`` (the
            training run's id, or None) and ``eval_dataset`` (the cross dataset, or None).
    """
    run = links["run"]
    with atomic_path(outputs["per_mask"]) as tmp:
        per_mask.to_parquet(tmp, index=False)
    with atomic_path(outputs["per_case"]) as tmp:
        per_case.to_parquet(tmp, index=False)
    record = {
        "method": spec.name,
        "seconds": seconds,
        "n_prompts": len(per_mask),
        "means": summaries.means.to_dict(orient="records"),
        "hd95_mm": summaries.distances.to_dict(orient="records"),
        "per_case_3d": summaries.per_case_3d.to_dict(orient="records"),
        "mlflow_run_id": run.info.run_id if run is not None else None,
        "train_run_id": links["train_run"],
        "eval_dataset": links["eval_dataset"] or config["dataset"]["name"],
        "weights": weights_provenance(spec, config),
    }
    if run is not None:
        log_metrics(spec, summaries, seconds, outputs["per_mask"])
    write_json(outputs["summary"], record)
    examples.publish()


def log_metrics(spec: MethodSpec, summaries: Summaries, seconds: float, out_per_mask: str | Path) -> None:
    """Log the summaries, the time and the per-mask table to the active MLflow run."""
    import mlflow

    metric = "mdsc" if not spec.prompted else "dsc"
    for row in summaries.means.itertuples(index=False):
        mlflow.log_metric(f"{metric}/{row.prompt}/{row.modality}", float(row.mean))
        mlflow.log_metric(f"n/{row.prompt}/{row.modality}", int(row.n))
    for row in summaries.distances.itertuples(index=False):
        if np.isfinite(row.median):
            mlflow.log_metric(f"hd95_mm/{row.prompt}/{row.modality}", float(row.median))
    for row in summaries.per_case_3d.itertuples(index=False):
        mlflow.log_metric(f"dsc_3d/{row.prompt}", float(row.dsc_3d))
        if np.isfinite(row.hd95_3d_mm):
            mlflow.log_metric(f"hd95_3d_mm/{row.prompt}", float(row.hd95_3d_mm))
    mlflow.log_metric("seconds", seconds)
    mlflow.log_artifact(str(out_per_mask), artifact_path="tables")
    mlflow.log_table(summaries.means, artifact_file="tables/summary.json")


def prompt_free_rows(
    model: torch.nn.Module,
    image: str,
    group: pd.DataFrame,
    size: int,
    to_index: Mapping[int, int],
    *,
    inputs: torch.Tensor | None = None,
    text: torch.Tensor | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score a prompt-free network (or PG-SAM) on one test slice: one row per class present in its ground truth.

    The rule (README, "Metrics"): the network's label map (argmax over C + 1
    channels, mapped back onto the slice) is compared, for each class k with
    at least one test object in the slice, as the region labelled k against
    the union of the slice's class-k objects. ``dsc`` and ``sem_dsc`` are
    that DSC (a network that names no class right scores 0), so the rows
    enter mDSC exactly as SAWD's per-object rows do. Classes the network
    predicts where the slice has none are not scored, as for the prompted
    methods, which segment only the objects they are asked for.

    Args:
        model: A prompt-free :class:`~segsam.models.segsam_net.PromptableModel`, in eval mode.
        image: Path of the slice (PNG).
        group: The slice's rows of the test prompts (any prompt kind; one object per mask).
        size: Model input side.
        to_index: Vocabulary class id -> class index k (channel k + 1; :func:`class_index`).
        inputs: What the model takes for this slice, 1 x ...: PG-SAM's cached
            1 x 256 x h x w embedding or its encoder's 1 x 3 x S x S input; None:
            the slice's image as :func:`~segsam.models.preprocess.prepare_image` makes it.
        text: C x d_text class text embeddings, passed to a model given ``inputs`` (PG-SAM).

    Returns:
        (rows with the per-mask table's columns and ``prompt`` = ``"none"``,
        {first ground-truth mask path of each class: (the predicted class region, the union
        of the class's ground-truth objects)}, H x W bool arrays).
    """
    pixels, info = prepare_image(read_png(image), size)
    if inputs is None:
        logits = model(pixels.unsqueeze(0)).semantic[0].float()
    else:
        logits = model(inputs, text=text).semantic[0].float()
    # map each class's logit back onto the slice, then take the argmax there
    predicted = info.logits_to_original(logits).argmax(0)
    objects = group.drop_duplicates("mask")
    firsts = objects.sort_values("class_id", kind="stable").drop_duplicates("class_id")  # one row per class
    truth = torch.stack(
        [
            torch.from_numpy(
                np.any([read_png(path) > 0 for path in objects.loc[objects["class_id"] == c, "mask"]], axis=0)
            )
            for c in firsts["class_id"]
        ]
    )
    region = torch.stack([predicted == to_index[int(c)] + 1 for c in firsts["class_id"]])
    scores = dice_scores(region, truth)
    found = region.flatten(1).any(1).numpy()
    rows = pd.DataFrame(
        {
            "mask": firsts["mask"].to_numpy(),
            "image": image,
            "case": firsts["case"].to_numpy(),
            "modality": firsts["modality"].to_numpy(),
            "class_id": firsts["class_id"].to_numpy(np.int64),
            "class_name": firsts["class_name"].to_numpy(),
            "prompt": NO_PROMPT,
            "dsc": scores,
            "hd95_mm": hd95_mm(region, truth, firsts["spacing_mm"].to_numpy(np.float64)),
            "pred_class_id": np.where(found, firsts["class_id"].to_numpy(np.int64), -1),
            "sem_dsc": scores,
            "pred_area": region.flatten(1).sum(1).numpy(),
            "gt_area": truth.flatten(1).sum(1).numpy(),
        }
    )
    return rows, dict(zip(firsts["mask"], zip(region.numpy(), truth.numpy())))
