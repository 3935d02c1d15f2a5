"""Evaluate one method on the saved test prompts (from cached embeddings, or from the images
when its encoder was trained), or a prompt-free network on the same test slices."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from segsam.atomic import atomic_path, write_json
from segsam.data.io import read_png, write_png
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.errors import DataError
from segsam.evaluate.metrics import dice_scores, distance_summary, hd95_mm, semantic_summarise, summarise
from segsam.evaluate.volume import AXIS, CaseVolumes, case_summary
from segsam.methods import get_method
from segsam.models.method_model import build_method_model, load_trained, weights_provenance
from segsam.models.preprocess import ResizeInfo, encoder_input, prepare_image
from segsam.models.segsam_net import ModelOutput
from segsam.text.cache import load_class_embeddings
from segsam.tracking import start_run

#: Prompts decoded per forward pass (bounds the memory of slices with many masks).
PROMPTS_PER_PASS = 8

log = logging.getLogger(__name__)

#: The ``prompt`` value of a prompt-free network's rows (as in the paper's table 2).
NO_PROMPT = "none"


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


def evaluate_method(
    method: str,
    prompts_parquet: str | Path,
    cache_dir: str | Path,
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
    """
    spec = get_method(method)
    if spec.trains and checkpoint is None:
        raise DataError(f"method {method!r} trains: its checkpoint is required for evaluation")
    torch.set_num_threads(max(1, threads))
    cfg = config["evaluate"]
    prompts = pd.read_parquet(prompts_parquet)
    if spec.encoder_frozen and cache_dir is None:
        raise DataError(f"method {method!r} is evaluated from the embedding cache: pass its folder (cache_dir)")
    store = EmbeddingStore.open(cache_dir, prompts["case"].unique()) if spec.encoder_frozen else None
    vocabulary = Vocabulary.read(config["vocabulary"])
    to_index = vocabulary.class_index
    text = torch.from_numpy(load_class_embeddings(text_parquet, vocabulary)) if spec.has_t2vse else None
    model = build_method_model(spec, config, len(vocabulary), None if text is None else text.shape[1])
    if checkpoint is not None:
        load_trained(model, checkpoint, spec)
    model.eval()
    size = int(config["encoder"]["image_size"])
    threshold_logit = float(np.log(cfg["threshold"] / (1 - cfg["threshold"])))

    results = []
    volumes = CaseVolumes(method)
    examples = set(example_images(prompts))
    examples_tmp = Path(out_examples).parent / f".{Path(out_examples).name}.tmp"
    shutil.rmtree(examples_tmp, ignore_errors=True)
    examples_tmp.mkdir(parents=True)
    start = time.perf_counter()
    with torch.inference_mode():
        for image, group in tqdm(
            prompts.groupby("image", sort=True), desc=f"evaluate {method}", unit="slice", mininterval=2.0
        ):
            volumes.finish(keep=group["case"].iloc[0])  # slices are sorted by path, so by case: score the cases before
            if spec.prompt_free:
                frame, regions = prompt_free_rows(model, image, group, size, to_index)
                results.append(frame)
                if group["axis"].iloc[0] == AXIS:
                    plane, spacing = int(group["slice"].iloc[0]), float(group["spacing_mm"].iloc[0])
                    for row in frame.itertuples(index=False):
                        predicted, truth = regions[row.mask]
                        volumes.add(
                            NO_PROMPT,
                            row.case,
                            row.modality,
                            plane,
                            int(row.class_id),
                            row.class_name,
                            spacing,
                            predicted,
                            truth,
                        )
                if image in examples:
                    for mask_path, (predicted, _) in regions.items():
                        write_png(examples_tmp / Path(mask_path).name, predicted.astype(np.uint8) * 255)
                continue
            targets = np.stack([read_png(p) > 0 for p in group["mask"]])
            info = ResizeInfo.for_shape(targets.shape[1], targets.shape[2], size)
            is_point = (group["prompt"] == "point").to_numpy()
            boxes = info.box_to_model_coords(group[["x0", "y0", "x1", "y1"]].to_numpy(np.float32))
            points = info.to_model_coords(group[["px", "py"]].to_numpy(np.float32))
            if store is not None:
                embedding = store.get([image])
            else:  # the method's own (trained) encoder
                embedding = model.encode(encoder_input(read_png(image), size, spec.encoder)[0][None])
            # at most PROMPTS_PER_PASS prompts per forward pass: memory stays flat for slices with many masks
            parts = [
                model(
                    embedding,
                    is_point[i : i + PROMPTS_PER_PASS],
                    boxes[i : i + PROMPTS_PER_PASS],
                    points[i : i + PROMPTS_PER_PASS],
                    text,
                    image_index=np.zeros(min(PROMPTS_PER_PASS, len(group) - i), np.int64),
                )
                for i in range(0, len(group), PROMPTS_PER_PASS)
            ]
            out = ModelOutput.concatenate(parts)
            pred = info.logits_to_original(out.masks[:, 0]) > threshold_logit
            truth = torch.from_numpy(targets)
            frame = group[["mask", "image", "case", "modality", "class_id", "class_name", "prompt"]].copy()
            frame["dsc"] = dice_scores(pred, truth)
            frame["hd95_mm"] = hd95_mm(pred, truth, group["spacing_mm"].to_numpy(np.float64))
            if out.sem_masks is not None and out.class_logits is not None:
                # semantic task (SPEC §3): SAWD's mask counts for the true class only if its class is right
                sem_pred = info.logits_to_original(out.sem_masks[:, 0]) > threshold_logit
                predicted = out.class_logits.argmax(1).numpy()
                correct = predicted == np.array([to_index[int(c)] for c in group["class_id"]])
                frame["pred_class_id"] = [vocabulary.ids[i] for i in predicted]
                frame["sem_dsc"] = np.where(correct, dice_scores(sem_pred, truth), 0.0)
            else:
                frame["pred_class_id"] = -1
                frame["sem_dsc"] = np.nan
            frame["pred_area"] = pred.flatten(1).sum(1).numpy()
            frame["gt_area"] = targets.reshape(len(group), -1).sum(1)
            results.append(frame)
            if group["axis"].iloc[0] == AXIS:
                for row, predicted, truth_plane in zip(group.itertuples(index=False), pred.numpy(), targets):
                    volumes.add(
                        row.prompt,
                        row.case,
                        row.modality,
                        int(row.slice),
                        int(row.class_id),
                        row.class_name,
                        float(row.spacing_mm),
                        predicted,
                        truth_plane,
                    )
            if image in examples:
                for mask_path, kind, predicted in zip(group["mask"], group["prompt"], pred):
                    if kind == "box":
                        write_png(examples_tmp / Path(mask_path).name, predicted.numpy().astype(np.uint8) * 255)
    per_mask = pd.concat(results, ignore_index=True)
    per_mask.insert(0, "method", method)
    elapsed = time.perf_counter() - start
    # prompt-free networks have only the semantic task: their summary is mDSC
    summarise_rows = semantic_summarise if spec.prompt_free else summarise
    summary = summarise_rows(per_mask, int(cfg["bootstrap"]), float(cfg["ci"]), int(cfg["seed"]))
    distances = distance_summary(per_mask)
    per_case = volumes.table()
    volume_summary = case_summary(per_case)

    train_run = None
    if train_summary is not None:
        train_run = json.loads(Path(train_summary).read_text(encoding="utf-8")).get("mlflow_run_id")
    tags = {"train_run_id": train_run} if train_run else {}
    with start_run(config, "evaluate", method, extra_tags=tags, eval_dataset=eval_dataset) as run:
        with atomic_path(out_per_mask) as tmp:
            per_mask.to_parquet(tmp, index=False)
        with atomic_path(out_per_case) as tmp:
            per_case.to_parquet(tmp, index=False)
        record = {
            "method": method,
            "seconds": elapsed,
            "n_prompts": len(per_mask),
            "means": summary.to_dict(orient="records"),
            "hd95_mm": distances.to_dict(orient="records"),
            "per_case_3d": volume_summary.to_dict(orient="records"),
            "mlflow_run_id": run.info.run_id if run is not None else None,
            "train_run_id": train_run,
            "eval_dataset": eval_dataset or config["dataset"]["name"],
            "weights": weights_provenance(spec, config),
        }
        if run is not None:
            import mlflow

            metric = "mdsc" if spec.prompt_free else "dsc"
            for row in summary.itertuples(index=False):
                mlflow.log_metric(f"{metric}/{row.prompt}/{row.modality}", float(row.mean))
                mlflow.log_metric(f"n/{row.prompt}/{row.modality}", int(row.n))
            for row in distances.itertuples(index=False):
                if np.isfinite(row.median):
                    mlflow.log_metric(f"hd95_mm/{row.prompt}/{row.modality}", float(row.median))
            for row in volume_summary.itertuples(index=False):
                mlflow.log_metric(f"dsc_3d/{row.prompt}", float(row.dsc_3d))
                if np.isfinite(row.hd95_3d_mm):
                    mlflow.log_metric(f"hd95_3d_mm/{row.prompt}", float(row.hd95_3d_mm))
            mlflow.log_metric("seconds", elapsed)
            mlflow.log_artifact(str(out_per_mask), artifact_path="tables")
            mlflow.log_table(summary, artifact_file="tables/summary.json")
        write_json(out_summary, record)
        shutil.rmtree(out_examples, ignore_errors=True)
        os.replace(examples_tmp, out_examples)
    log.info(
        "%s: %d prompts in %.1f s; %s",
        method,
        len(per_mask),
        elapsed,
        "; ".join(f"{r.prompt}/{r.modality}={r.mean:.3f}" for r in summary.itertuples() if r.modality == "avg"),
    )
    return per_mask


def prompt_free_rows(
    model: torch.nn.Module, image: str, group: pd.DataFrame, size: int, to_index: Mapping[int, int]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Score a prompt-free network on one test slice: one row per class present in its ground truth.

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

    Returns:
        (rows with the per-mask table's columns and ``prompt`` = ``"none"``,
        {first ground-truth mask path of each class: (the predicted class region, the union
        of the class's ground-truth objects)}, H x W bool arrays).
    """
    pixels, info = prepare_image(read_png(image), size)
    logits = model(pixels.unsqueeze(0)).semantic[0].float()
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
