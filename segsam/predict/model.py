"""The method's model for prediction: where its trained weights come from, and one plane at a time.

A method that trains needs its checkpoint (:func:`find_checkpoint`): by default the
workflow's ``results/models/<method>/checkpoint.pt``; ``--model`` names another
workflow results folder, a checkpoint file, or the id of an MLflow training run
(its ``checkpoint/checkpoint.pt`` artifact, read from the sqlite store of
``tracking.uri``). Zero-shot methods (``medsam_lite``, ``sam``) take none. The
pretrained encoder weights and the vocabulary come from the config.

:class:`Predictor` encodes a plane once (a frozen encoder as the embedding cache
does, embeddings rounded to float16 as the cache stores them; a trained encoder
as evaluation does) and decodes all of the plane's prompts from that one
embedding, the image-only parts computed once
(:meth:`~segsam.models.segsam_net.PromptableModel.image_context`). The masks are
SAGD's (the binary task), also for methods with SAWD.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segsam.config import REPO_ROOT, encoder_settings
from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError
from segsam.hashing import sha256_of
from segsam.methods import MethodSpec
from segsam.models.build import build_image_encoder
from segsam.models.method_model import build_method_model, load_trained, weights_provenance
from segsam.models.preprocess import ResizeInfo, encoder_input, prepare_image
from segsam.models.segsam_net import PromptableModel
from segsam.models.weights import resolve_weights
from segsam.text.cache import load_class_embeddings

log = logging.getLogger(__name__)

#: Prompts decoded per forward pass (bounds the memory of planes with many prompts).
PROMPTS_PER_PASS = 8
#: An MLflow run id: 32 lowercase hex digits.
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Where the workflow keeps a method's checkpoint, below its results folder.
WORKFLOW_CHECKPOINT = "models/{method}/checkpoint.pt"
#: The class text embeddings (rule ``embed_text``), below the workflow's results folder.
WORKFLOW_TEXT = "text/class_embeddings.parquet"
#: The workflow's results folder, the default source of a trained method's checkpoint.
RESULTS = Path("results")


@dataclass(frozen=True)
class Checkpoint:
    """A trained method's weights.

    Attributes:
        path: The checkpoint file (for an MLflow run: a temporary copy of its artifact).
        sha256: Its digest.
        source: What ``--model`` named: the file, the workflow folder, or the MLflow run id.
        results: The workflow results folder it belongs to (for the class text
            embeddings), or None.
        mlflow_run_id: The MLflow training run it came from, or None.
    """

    path: Path
    sha256: str
    source: str
    results: Path | None = None
    mlflow_run_id: str | None = None

    def record(self) -> dict[str, Any]:
        """For the sidecar."""
        path = None if self.mlflow_run_id else str(self.path.resolve())
        return {"path": path, "sha256": self.sha256, "source": self.source, "mlflow_run_id": self.mlflow_run_id}


def _workflow_checkpoint(results: Path, spec: MethodSpec) -> Path | None:
    candidate = results / WORKFLOW_CHECKPOINT.format(method=spec.name)
    return candidate if candidate.is_file() else None


@contextlib.contextmanager
def find_checkpoint(spec: MethodSpec, model: str | None, config: Mapping[str, Any]) -> Iterator[Checkpoint | None]:
    """The checkpoint a method's prediction uses, for the duration of the block.

    Args:
        spec: The method.
        model: ``--model``: None (the workflow's ``results/``), a workflow
            results folder, a model folder holding ``checkpoint.pt``, a
            checkpoint file, or an MLflow run id.
        config: The whole validated config (``tracking.uri`` for a run id).

    Yields:
        Checkpoint | None: None for a zero-shot method.

    Raises:
        DataError: A zero-shot method given a model, or no checkpoint found (one
            line naming where it was looked for and what to do).
    """
    if not spec.trains:
        if model is not None:
            raise DataError(f"method {spec.name!r} is zero-shot: it takes no --model (got {model})")
        yield None
        return
    path = Path(model) if model is not None else RESULTS
    if path.is_file():
        yield Checkpoint(path, sha256_of(path), str(model))
        return
    if path.is_dir():
        found = _workflow_checkpoint(path, spec)
        if found is not None:
            yield Checkpoint(found, sha256_of(found), str(path), results=path)
            return
        if (path / "checkpoint.pt").is_file():
            found = path / "checkpoint.pt"
            yield Checkpoint(found, sha256_of(found), str(path), results=path.parent.parent)
            return
    if model is not None and RUN_ID.match(model) and not path.exists():
        with tempfile.TemporaryDirectory(prefix="segsam-predict-") as tmp:
            yield mlflow_checkpoint(model, spec, config, Path(tmp))
        return
    where = path / WORKFLOW_CHECKPOINT.format(method=spec.name)
    raise DataError(
        f"{where}: no checkpoint for method {spec.name!r} (it trains); train it "
        f"(snakemake {RESULTS / WORKFLOW_CHECKPOINT.format(method=spec.name)}) or pass --model with a checkpoint "
        "file, a workflow results folder or an MLflow run id"
    )


def mlflow_checkpoint(run_id: str, spec: MethodSpec, config: Mapping[str, Any], folder: Path) -> Checkpoint:
    """The checkpoint artifact of an MLflow training run, copied into ``folder``.

    Raises:
        DataError: No such run in the store, a run of another stage or method,
            or a run without the artifact.
        segsam.tracking.TrackingError: The store is missing or damaged.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from segsam.tracking import check_store

    store = Path(config["tracking"]["uri"].removeprefix("sqlite:///")).resolve()
    uri = f"sqlite:///{store}"
    check_store(uri, must_exist=True)
    try:
        run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as err:
        raise DataError(f"{store}: no MLflow run {run_id} in this store (config key tracking.uri)") from err
    stage, method = run.data.tags.get("stage"), run.data.tags.get("method")
    if stage != "train" or method != spec.name:
        raise DataError(f"{store}: MLflow run {run_id} is {stage}/{method}, not a training run of method {spec.name!r}")
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=str(folder), tracking_uri=uri
        )
    except (MlflowException, OSError) as err:
        raise DataError(f"{store}: MLflow run {run_id} has no checkpoint/checkpoint.pt artifact ({err})") from err
    return Checkpoint(Path(local), sha256_of(local), run_id, mlflow_run_id=run_id)


def config_path(value: str | Path) -> Path:
    """A path from the config: as given when it exists (relative to the working folder), else below the repository."""
    path = Path(value)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def class_text(
    spec: MethodSpec, text: str | Path | None, checkpoint: Checkpoint | None, vocabulary: Vocabulary
) -> torch.Tensor | None:
    """C x d_text class text embeddings for a method with T2VSE (None otherwise).

    Args:
        spec: The method.
        text: ``--text``, or None: the checkpoint's workflow folder's
            ``text/class_embeddings.parquet`` (else ``results/``'s).
        checkpoint: The method's checkpoint.
        vocabulary: The global vocabulary.

    Raises:
        DataError: The file is missing or lacks a class.
    """
    if not spec.needs_text:
        return None
    results = checkpoint.results if checkpoint is not None and checkpoint.results is not None else RESULTS
    path = Path(text) if text is not None else results / WORKFLOW_TEXT
    if not path.is_file():
        raise DataError(
            f"{path}: class text embeddings not found; method {spec.name!r} has T2VSE: pass --text with the "
            "class_embeddings.parquet of its training run (rule embed_text)"
        )
    return torch.from_numpy(load_class_embeddings(path, vocabulary))


def load_checkpoint(model: PromptableModel, checkpoint: Checkpoint, spec: MethodSpec) -> None:
    """Lay the trained weights over the model; a checkpoint of another vocabulary size is a DataError."""
    try:
        load_trained(model, checkpoint.path, spec)
    except RuntimeError as err:  # torch: tensor shapes differ (another vocabulary or text width)
        first = str(err).strip().splitlines()[-1].strip()
        raise DataError(
            f"{checkpoint.path}: does not fit method {spec.name!r} with this config's vocabulary "
            f"({model.num_classes} classes): {first[:200]}"
        ) from err


@dataclass
class Predictor:
    """A method ready to segment planes.

    Attributes:
        spec: The method.
        model: Its model with its trained weights, in eval mode.
        encoder: The frozen image encoder (the embedding cache's), or None when
            the model encodes (trained encoder) or is prompt-free.
        vocabulary: The global vocabulary (model class k = ``vocabulary.ids[k]``).
        text: C x d_text class text embeddings (T2VSE, PG-SAM text priors), or None.
        size: Model input side S.
        bf16: bf16 autocast for the frozen encoder (``encoder.bf16``).
        device: Where the model runs.
        weights: The pretrained weights (:func:`segsam.models.method_model.weights_provenance`).
        checkpoint: The trained weights' record, or None (zero-shot).
    """

    spec: MethodSpec
    model: PromptableModel
    encoder: nn.Module | None
    vocabulary: Vocabulary
    text: torch.Tensor | None
    size: int
    bf16: bool
    device: torch.device
    weights: dict[str, Any] | None
    checkpoint: dict[str, Any] | None

    def embed(self, plane: np.ndarray) -> tuple[torch.Tensor, ResizeInfo]:
        """The image embedding of one H x W uint8 plane: 1 x 256 x h x w, and its geometry."""
        pixels, info = encoder_input(plane, self.size, self.spec.encoder)
        pixels = pixels[None].to(self.device)
        if self.encoder is None:
            return self.model.encode(pixels), info
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            embedding = self.encoder(pixels).float()
        return embedding.half().float(), info  # the embedding cache's precision, as training saw it

    def decode(
        self, embedding: torch.Tensor, info: ResizeInfo, is_point: np.ndarray, boxes: np.ndarray, points: np.ndarray
    ) -> np.ndarray:
        """SAGD's foreground probability for each prompt of one plane.

        Args:
            embedding: 1 x 256 x h x w, the plane's embedding (:meth:`embed`).
            info: The plane's geometry.
            is_point: N bool.
            boxes: N x 4 (x0, y0, x1, y1) plane pixel coordinates (rows of points ignored).
            points: N x 2 (x, y) plane pixel coordinates (rows of boxes ignored).

        Returns:
            N x H x W float32 probabilities on the plane.
        """
        context = self.model.image_context(embedding, self.text, semantic=False)
        model_boxes = info.box_to_model_coords(boxes)
        model_points = info.to_model_coords(points)
        parts = []
        for first in range(0, len(is_point), PROMPTS_PER_PASS):
            chunk = slice(first, first + PROMPTS_PER_PASS)
            out = self.model(
                context,
                is_point[chunk],
                model_boxes[chunk],
                model_points[chunk],
                semantic=False,
                image_index=np.zeros(len(is_point[chunk]), np.int64),
            )
            parts.append(torch.sigmoid(info.logits_to_original(out.masks[:, 0].float())).cpu())
        return torch.cat(parts).numpy()

    def segment(self, plane: np.ndarray) -> np.ndarray:
        """A prompt-free method's class probabilities on one H x W uint8 plane (U-Net, UNETR, PG-SAM).

        Returns:
            (C + 1) x H x W float32 softmax probabilities (channel 0 background,
            k + 1 class ``vocabulary.ids[k]``), the logits mapped back onto the plane first.
        """
        if self.spec.prompt_free:  # a conventional network reads the plane itself
            pixels, info = prepare_image(plane, self.size)
            out = self.model(pixels[None].to(self.device))
        elif self.encoder is not None:  # PG-SAM on a frozen encoder: the embedding the cache would hold
            embedding, info = self.embed(plane)
            out = self.model(embedding, self.text)
        else:  # PG-SAM whose own encoder runs (its levels are fused): the encoder's input
            pixels, info = encoder_input(plane, self.size, self.spec.encoder)
            out = self.model(pixels[None].to(self.device), self.text)
        logits = out.semantic[0].float()
        return torch.softmax(info.logits_to_original(logits), dim=0).cpu().numpy()


def frozen_encoder(spec: MethodSpec, config: Mapping[str, Any]) -> nn.Module | None:
    """The method's frozen image encoder, as the embedding cache builds it; None when the model encodes."""
    if spec.prompt_free or not spec.encoder_frozen:
        return None
    settings = encoder_settings(config, spec.encoder)
    return build_image_encoder(spec.encoder, resolve_weights(settings["weights"], settings["sha256"]))


def build_predictor(
    spec: MethodSpec,
    config: Mapping[str, Any],
    checkpoint: Checkpoint | None,
    *,
    text: str | Path | None = None,
    device: str = "cpu",
) -> Predictor:
    """The method's model with its pretrained and trained weights, and its frozen encoder.

    Args:
        spec: The method.
        config: The whole validated config (encoder weights, vocabulary, image size).
        checkpoint: The trained weights (:func:`find_checkpoint`); None for zero-shot methods.
        text: The class text embeddings (T2VSE), see :func:`class_text`.
        device: ``cpu``, ``cuda``, or ``auto`` (CUDA when available).

    Raises:
        DataError: Missing text embeddings, or a checkpoint that does not fit.
        WeightsError: Missing or corrupt pretrained weights.
    """
    vocabulary = Vocabulary.read(config_path(config["vocabulary"]))
    embeddings = class_text(spec, text, checkpoint, vocabulary)
    text_dim = None if embeddings is None else embeddings.shape[1]
    # a frozen encoder runs beside the model (Predictor.embed), as the cache would
    model = build_method_model(spec, config, len(vocabulary), text_dim, with_image_encoder=not spec.encoder_frozen)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    encoder = frozen_encoder(spec, config)
    return Predictor(
        spec=spec,
        model=model.eval().to(target),
        encoder=None if encoder is None else encoder.to(target),
        vocabulary=vocabulary,
        text=None if embeddings is None else embeddings.to(target),
        size=int(config["encoder"]["image_size"]),
        bf16=bool(config["encoder"]["bf16"]),
        device=target,
        weights=weights_provenance(spec, config),
        checkpoint=None if checkpoint is None else checkpoint.record(),
    )
