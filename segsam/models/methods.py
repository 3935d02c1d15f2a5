"""The method registry: config names -> how a method is built and what trains.

A method name is a config value (``methods:`` in ``config/config.yaml``) and a
table row. ``workflow/schemas/config.schema.yaml`` enumerates the same names
(a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from segsam.errors import ConfigError

if TYPE_CHECKING:  # the registry is read at workflow start-up: keep torch out of it
    from torch import nn


@dataclass(frozen=True)
class MethodSpec:
    """One row of the paper's tables.

    Attributes:
        name: Config name.
        display: Row label in tables and figures.
        trains: Whether the method has a train stage (False: zero-shot).
        trainable: Top-level sub-modules whose parameters train; everything
            else is frozen. The image encoder is frozen for every method
            here, so all of them train from the image-embedding cache.
        description: One sentence for the README table.
    """

    name: str
    display: str
    trains: bool
    trainable: tuple[str, ...]
    description: str


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="medsam_lite",
            display="LiteMedSAM (zero-shot)",
            trains=False,
            trainable=(),
            description="LiteMedSAM (MedSAM distilled into TinyViT) as released, no training.",
        ),
        MethodSpec(
            name="ft_decoder",
            display="LiteMedSAM + fine-tuned decoder",
            trains=True,
            trainable=("prompt_encoder", "mask_decoder"),
            description="Frozen LiteMedSAM encoder; prompt encoder and SAM mask decoder (SAGD) fine-tuned.",
        ),
    )
}


def get_method(name: str) -> MethodSpec:
    """Look a method up by config name.

    Raises:
        ConfigError: naming the unknown method and the known ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def set_trainable(model: nn.Module, spec: MethodSpec) -> None:
    """Freeze every parameter of ``model`` except those under ``spec.trainable``."""
    for name, param in model.named_parameters():
        param.requires_grad = name.split(".", 1)[0] in spec.trainable


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
