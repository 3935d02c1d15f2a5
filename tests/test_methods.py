"""Tests of the method registry (segsam.methods)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from segsam.config import validate
from segsam.errors import ConfigError
from segsam.methods import METHODS, MethodSpec, get_method
from segsam.models.build import parameter_counts, set_trainable

REPO = Path(__file__).resolve().parents[1]


class _TinySam(nn.Module):
    """Stand-in with SAM's top-level sub-module names."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Linear(4, 3)  # 15 parameters
        self.prompt_encoder = nn.Linear(2, 2)  # 6
        self.mask_decoder = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))  # 8 + 3 = 11
        self.register_buffer("pixel_mean", torch.zeros(3))


def test_every_registered_method_is_a_valid_config_value(config: dict) -> None:
    """The registry is the one list of method names: the schema does not repeat it."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
    assert "enum" not in schema["properties"]["methods"]["items"]
    config["methods"] = list(METHODS)
    assert validate(config)["methods"] == list(METHODS)


def test_registry_entries_are_consistent() -> None:
    for name, spec in METHODS.items():
        assert spec.name == name
        assert spec.display and spec.description
        assert spec.trains == bool(spec.trainable)
        # a method trains from the embedding cache exactly when nothing in its encoder trains
        assert spec.encoder_frozen == (
            not spec.prompt_free and "image_encoder" not in spec.trainable and spec.adapter is None
        )


def test_get_method_known() -> None:
    assert get_method("ft_decoder") is METHODS["ft_decoder"]


def test_get_method_unknown_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_method("segsam_xl")
    message = str(info.value)
    assert "segsam_xl" in message
    for name in METHODS:
        assert name in message


def test_set_trainable_freezes_all_but_listed_children() -> None:
    model = _TinySam()
    set_trainable(model, METHODS["ft_decoder"])
    for name, param in model.named_parameters():
        expected = name.startswith(("prompt_encoder.", "mask_decoder."))
        assert param.requires_grad is expected, name
    assert parameter_counts(model) == (6 + 11, 15)


def test_set_trainable_zero_shot_freezes_everything() -> None:
    model = _TinySam()
    set_trainable(model, METHODS["medsam_lite"])
    assert parameter_counts(model) == (0, 15 + 6 + 11)
    assert not any(p.requires_grad for p in model.parameters())


def test_set_trainable_matches_whole_child_names_only() -> None:
    """``mask_decoder`` must not also unfreeze a child called ``mask_decoder_extra``."""
    model = _TinySam()
    model.mask_decoder_extra = nn.Linear(1, 1)
    spec = MethodSpec(name="x", display="x", trains=True, trainable=("mask_decoder",), description="x")
    set_trainable(model, spec)
    assert not model.mask_decoder_extra.weight.requires_grad
    assert all(p.requires_grad for p in model.mask_decoder.parameters())
    assert parameter_counts(model) == (11, 15 + 6 + 2)
