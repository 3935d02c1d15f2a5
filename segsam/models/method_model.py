"""A method's model from its spec: pretrained weights in, trained weights saved and loaded back.

Training and evaluation (and prediction) build a method's model the same way,
so the rules live here, below both stages:

* :func:`build_method_model`: the spec's modules with their pretrained weights
  (a frozen encoder is left out: its embeddings come from the cache);
* :func:`trained_state`: what a training run saves (everything that trained,
  and every tensor outside the image encoder);
* :func:`load_trained`: that state laid over a freshly built model, with the
  keys checked against the spec;
* :func:`weights_provenance`: the pretrained file and its sha256, for the
  results' sidecars.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from segsam.config import encoder_settings, reads_cache
from segsam.errors import DataError
from segsam.hashing import sha256_of
from segsam.methods import MethodSpec
from segsam.models.build import build_model
from segsam.models.pg_sam import PGSam
from segsam.models.segsam_net import PromptableModel
from segsam.models.weights import load_state_dict, resolve_weights

#: Prefix of the image encoder's keys in a :class:`PromptableModel` state dict.
ENCODER_PREFIX = "image_encoder."


def build_method_model(
    spec: MethodSpec,
    config: Mapping[str, Any],
    num_classes: int,
    text_dim: int | None,
    *,
    with_image_encoder: bool | None = None,
) -> PromptableModel | PGSam:
    """The method's model with its pretrained weights, for training, evaluation or prediction.

    A frozen encoder is left out while its embeddings come from the cache
    (:func:`segsam.config.reads_cache`); with the cache off it is built, frozen,
    and encodes the images in the forward pass. An encoder that trains
    (adapters, MedSAM) is always built and loaded. The weights
    are those of the method's encoder (:func:`segsam.config.encoder_settings`),
    verified against their sha256. Prompt-free networks are randomly
    initialised with the current torch seed.

    Args:
        spec: The method.
        config: The whole validated config.
        num_classes: C, the vocabulary size.
        text_dim: Width of the class text embeddings, for methods that read them
            (:attr:`~segsam.methods.MethodSpec.needs_text`: T2VSE, PG-SAM's text priors).
        with_image_encoder: Build a frozen encoder into the model; None: when the cache is off.

    Raises:
        WeightsError: When the pretrained weights are missing or fail their checksum.
    """
    if spec.prompt_free:
        return build_model(spec, encoder_weights=None, num_classes=num_classes, text_dim=None)
    settings = encoder_settings(config, spec.encoder)
    return build_model(
        spec,
        encoder_weights=resolve_weights(settings["weights"], settings["sha256"]),
        num_classes=num_classes,
        text_dim=text_dim if spec.needs_text else None,
        with_image_encoder=not reads_cache(config, spec.name) if with_image_encoder is None else with_image_encoder,
    )


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def trained_state(model: PromptableModel | PGSam) -> dict[str, torch.Tensor]:
    """What a training run saves: every tensor outside the image encoder, and the encoder's trainable parameters.

    A frozen encoder comes back from the pretrained weights; adapters and a
    fine-tuned encoder (MedSAM) are saved with the rest.
    """
    trainable = _trainable_names(model)
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(ENCODER_PREFIX) or k in trainable
    }


def load_trained(model: PromptableModel | PGSam, checkpoint: str | Path, spec: MethodSpec) -> None:
    """Lay a training run's checkpoint (:func:`trained_state`) over a freshly built model.

    Frozen encoder tensors may be missing from the checkpoint (they came with
    the pretrained weights); anything else missing, and any key the model does
    not have, means the checkpoint belongs to another method.

    Raises:
        DataError: When the keys do not fit the method (one line naming the file).
    """
    trainable = _trainable_names(model)
    missing, unexpected = model.load_state_dict(load_state_dict(checkpoint), strict=False)
    missing = [k for k in missing if not k.startswith(ENCODER_PREFIX) or k in trainable]
    if unexpected or missing:
        raise DataError(
            f"{checkpoint}: keys do not fit method {spec.name!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); retrain it or point at its own checkpoint"
        )


def weights_provenance(spec: MethodSpec, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pretrained weights a method starts from: ``{"encoder", "weights", "sha256"}``; None when prompt-free.

    The digest is the configured one (the file was checked against it when the
    model was built) or, when the config sets none, that of the file itself.
    """
    if spec.prompt_free:
        return None
    settings = encoder_settings(config, spec.encoder)
    sha = settings["sha256"] or sha256_of(resolve_weights(settings["weights"], None))
    return {"encoder": spec.encoder, "weights": str(settings["weights"]), "sha256": sha}
