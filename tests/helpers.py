"""Helpers several test modules import (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from segsam.data.vocabulary import Vocabulary
from segsam.methods import get_method
from segsam.models.method_model import build_method_model
from segsam.models.segsam_net import PromptableModel


def method_model(name: str, config: dict[str, Any], text_dim: int | None = None) -> PromptableModel:
    """The model of a registry method as training and evaluation build it (pretrained weights loaded)."""
    return build_method_model(get_method(name), config, len(Vocabulary.read(config["vocabulary"])), text_dim)
