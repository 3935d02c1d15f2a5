"""Shared fixtures: repository paths, the real shared data, configs, volume writers.

Real data lives outside the repository in ``<repo>/../shared/data`` (see that
folder's README). Tests that need it are marked ``shared_data`` and use the
:func:`shared_data` fixture, which skips with a reason when the folder is absent
(a fresh user machine does not have it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
VOCABULARY_CSV = REPO_ROOT / "config" / "vocabulary.csv"
LABELMAPS = REPO_ROOT / "config" / "labelmaps"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``; skips the test when the folder is absent."""
    if not (SHARED_DATA / "totalsegmentator").is_dir():
        pytest.skip(f"real shared data not found at {SHARED_DATA.resolve()} (only on developer/CI machines)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def default_config() -> dict[str, Any]:
    """The validated default config, shared by the session: read it, never change it."""
    return load_config()


@pytest.fixture
def config(default_config: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of the validated default config (``config/config.yaml``)."""
    return copy.deepcopy(default_config)


@pytest.fixture
def slicing_cfg(config: dict[str, Any]) -> dict[str, Any]:
    """The default ``slicing`` section (a copy the test may change)."""
    return config["slicing"]


@pytest.fixture(scope="session")
def vocabulary_csv() -> Path:
    return VOCABULARY_CSV


@pytest.fixture(scope="session")
def labelmaps_dir() -> Path:
    return LABELMAPS


WriteVolume = Callable[..., Path]


def write_volume(
    path: Path,
    array_zyx: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> Path:
    """Write a numpy array (array order z, y, x) as a volume with the given geometry."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def write_vol() -> WriteVolume:
    """The :func:`write_volume` helper (a fixture, so tests need not import conftest)."""
    return write_volume


def official_sam(depth: int = 12, global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)) -> Any:
    """A random SAM ViT-B at 1024, built the way ``build_sam_vit_b`` builds it, in eval mode.

    Fewer blocks (``depth``) keep CPU time low where a test does not need the full encoder;
    the keys stay those of the official checkpoint (``image_encoder.blocks.<i>.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``). Position tensors that SAM zero-initialises are
    drawn at random, so that resizing them matters. Seed torch first for fixed values.
    """
    from functools import partial

    import torch
    from torch import nn

    from segsam.models.sam_compat import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=768, img_size=1024, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=12,
            patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_attn_indexes, window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )
    with torch.no_grad():
        sam.image_encoder.pos_embed.normal_(std=0.02)
        for block in sam.image_encoder.blocks:
            block.attn.rel_pos_h.normal_(std=0.02)
            block.attn.rel_pos_w.normal_(std=0.02)
    return sam.eval()


def write_random_sam_vit_b(path: Path, seed: int = 0) -> str:
    """Writes a randomly initialised full SAM ViT-B (:func:`official_sam`) in the official checkpoint's layout.

    No real ViT-B weights are reachable here (SPEC §5): this file stands in for
    ``sam_vit_b_01ec64.pth`` (same keys and shapes, 375 MB).

    Returns:
        The file's sha256.
    """
    import torch

    from segsam.models.weights import sha256_of

    torch.manual_seed(seed)
    sam = official_sam()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return sha256_of(path)


@pytest.fixture(scope="session")
def random_vit_b(tmp_path_factory) -> tuple[Path, str]:
    """(path, sha256) of a random SAM ViT-B checkpoint in the official layout (see :func:`write_random_sam_vit_b`)."""
    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_01ec64.pth"
    return path, write_random_sam_vit_b(path)
