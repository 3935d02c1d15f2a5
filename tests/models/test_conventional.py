"""Prompt-free networks of table 2 (segsam.models.conventional)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR, DynUNet

from segsam.models.conventional import build_conventional, build_unet, build_unetr, nnunet_2d_plan


def test_nnunet_plan_for_256():
    kernels, strides, filters = nnunet_2d_plan(256)
    assert strides == [1, 2, 2, 2, 2, 2, 2]  # 256 -> 4
    assert filters == [32, 64, 128, 256, 512, 512, 512]
    assert kernels == [3] * 7
    assert nnunet_2d_plan(64)[1] == [1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="too small"):
        nnunet_2d_plan(6)


def test_unet_semantic_head():
    net = build_unet(6, image_size=64)
    assert isinstance(net, DynUNet)
    with torch.inference_mode():
        assert net.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def test_unetr_2d_semantic_head():
    pytest.importorskip("einops", reason="MONAI's UNETR needs einops (requirements.txt)")
    net = build_unetr(6, image_size=64)
    assert isinstance(net, UNETR)
    with torch.inference_mode():
        assert net.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def test_build_conventional_adds_background_and_validates():
    with torch.inference_mode():
        assert build_conventional("unet", 4, image_size=64).eval()(torch.rand(1, 3, 64, 64)).shape[1] == 5
    with pytest.raises(ValueError, match="unknown conventional network"):
        build_conventional("nnformer", 4)
    with pytest.raises(ValueError, match="num_classes"):
        build_conventional("unet", 0)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        build_unet(1)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_unetr(3, image_size=100)
