"""The one place that imports ``segment_anything``.

``segment_anything/__init__.py`` imports its predictor utilities, which import
``torchvision``. On CPU machines the registry's torchvision is a CUDA build that
fails to import next to the CPU torch (docs/environment.md#no-torchvision), and we do not install it. The
modelling code we need (``segment_anything.modeling``) does not use torchvision,
so this module registers a bare package object for ``segment_anything`` (its
``__path__`` pointing at the installed folder) before importing ``modeling``:
the package ``__init__`` never runs and torchvision is never touched.

Everything else in ``segsam`` imports SAM classes from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _load_modeling() -> types.ModuleType:
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("segment-anything is not installed: run `pip install -r requirements.txt -c constraints.txt`")
    if "segment_anything" not in sys.modules:
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")


_modeling = _load_modeling()

ImageEncoderViT = _modeling.ImageEncoderViT
MaskDecoder = _modeling.MaskDecoder
PromptEncoder = _modeling.PromptEncoder
TwoWayTransformer = _modeling.TwoWayTransformer
Sam = _modeling.Sam
LayerNorm2d = importlib.import_module("segment_anything.modeling.common").LayerNorm2d
MLPBlock = importlib.import_module("segment_anything.modeling.common").MLPBlock
TwoWayAttention = importlib.import_module("segment_anything.modeling.transformer").Attention
TwoWayAttentionBlock = importlib.import_module("segment_anything.modeling.transformer").TwoWayAttentionBlock
PositionEmbeddingRandom = importlib.import_module("segment_anything.modeling.prompt_encoder").PositionEmbeddingRandom

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "TwoWayTransformer",
    "Sam",
    "LayerNorm2d",
    "MLPBlock",
    "TwoWayAttention",
    "TwoWayAttentionBlock",
    "PositionEmbeddingRandom",
]
