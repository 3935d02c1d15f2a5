"""Prompt-free semantic segmentation networks of the paper's table 2.

Both map a B x 3 x S x S image to B x (C + 1) x S x S logits (channel 0 is
background, channel k + 1 is vocabulary class k) and train on the same slices
as the SAM-family methods, without prompts.

* ``unet``: MONAI ``DynUNet`` planned the way nnU-Net plans a 2-D network:
  3 x 3 kernels, stride-2 downsampling until the feature map is 4 x 4 (at
  most 6 times; :func:`nnunet_2d_plan`), 32 filters doubling per stage and
  capped at 512, instance norm, leaky ReLU, no deep supervision.
* ``unetr``: MONAI ``UNETR`` in 2-D with a ViT-B-sized transformer
  (16 x 16 patches, width 768, 12 heads, MLP 3072), feature size 16.
"""

from __future__ import annotations

import importlib.util

from monai.networks.nets import UNETR, DynUNet
from torch import nn

__all__ = ["CONVENTIONAL_NETWORKS", "nnunet_2d_plan", "build_unet", "build_unetr", "build_conventional"]

CONVENTIONAL_NETWORKS = ("unet", "unetr")


def nnunet_2d_plan(
    image_size: int, *, min_feature_size: int = 4, base_filters: int = 32, max_filters: int = 512, max_pools: int = 6
) -> tuple[list[int], list[int], list[int]]:
    """nnU-Net-style topology for a square 2-D input.

    Downsample by 2 while the feature map stays at least ``min_feature_size``
    (and at most ``max_pools`` times); filters start at ``base_filters`` and
    double per stage up to ``max_filters``.

    Args:
        image_size (int): Input side.
        min_feature_size (int): Smallest feature-map side.
        base_filters (int): Filters of the first stage.
        max_filters (int): Filter cap.
        max_pools (int): Most downsampling steps.

    Returns:
        tuple[list[int], list[int], list[int]]: Kernel sizes, strides and
          filters per stage (the first stride is 1).

    Raises:
        ValueError: If the image is too small to downsample even once.
    """
    if image_size < 2 * min_feature_size:
        raise ValueError(f"image_size {image_size} is too small for a U-Net (needs >= {2 * min_feature_size})")
    pools = 0
    size = image_size
    while pools < max_pools and size % 2 == 0 and size // 2 >= min_feature_size:
        size //= 2
        pools += 1
    strides = [1] + [2] * pools
    kernels = [3] * len(strides)
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(strides))]
    return kernels, strides, filters


def build_unet(num_outputs: int, *, image_size: int = 256, in_channels: int = 3) -> DynUNet:
    """The nnU-Net-style 2-D U-Net (``unet`` row).

    Args:
        num_outputs (int): Output channels (C + 1 with background).
        image_size (int): Input side used for planning.
        in_channels (int): Input channels.

    Returns:
        DynUNet: B x in_channels x S x S -> B x num_outputs x S x S.

    Raises:
        ValueError: If ``num_outputs`` < 2.
    """
    if num_outputs < 2:
        raise ValueError(f"a semantic head needs at least 2 outputs (background + 1 class), got {num_outputs}")
    kernels, strides, filters = nnunet_2d_plan(image_size)
    return DynUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_outputs,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=False,
        res_block=False,
    )


def build_unetr(num_outputs: int, *, image_size: int = 256, in_channels: int = 3) -> UNETR:
    """The 2-D UNETR (``unetr`` row).

    Args:
        num_outputs (int): Output channels (C + 1 with background).
        image_size (int): Input side (a multiple of 16).
        in_channels (int): Input channels.

    Returns:
        UNETR: B x in_channels x S x S -> B x num_outputs x S x S.

    Raises:
        ValueError: If ``num_outputs`` < 2 or the size is not a multiple of 16.
    """
    if num_outputs < 2:
        raise ValueError(f"a semantic head needs at least 2 outputs (background + 1 class), got {num_outputs}")
    if image_size % 16:
        raise ValueError(f"UNETR needs an image side that is a multiple of 16, got {image_size}")
    if importlib.util.find_spec("einops") is None:
        raise ImportError("MONAI's UNETR needs the einops package: pip install einops (it is in requirements.txt)")
    return UNETR(
        in_channels=in_channels,
        out_channels=num_outputs,
        img_size=(image_size, image_size),
        feature_size=16,
        hidden_size=768,
        mlp_dim=3072,
        num_heads=12,
        proj_type="conv",
        norm_name="instance",
        res_block=True,
        spatial_dims=2,
    )


def build_conventional(name: str, num_classes: int, *, image_size: int = 256) -> nn.Module:
    """Builds a prompt-free network with a C + 1 class semantic head.

    Args:
        name (str): ``"unet"`` or ``"unetr"``.
        num_classes (int): C, vocabulary size (background is added).
        image_size (int): Input side.

    Returns:
        nn.Module: B x 3 x S x S -> B x (C + 1) x S x S logits.

    Raises:
        ValueError: If ``name`` is unknown or ``num_classes`` < 1.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if name == "unet":
        return build_unet(num_classes + 1, image_size=image_size)
    if name == "unetr":
        return build_unetr(num_classes + 1, image_size=image_size)
    raise ValueError(f"unknown conventional network {name!r}; known: {', '.join(CONVENTIONAL_NETWORKS)}")
