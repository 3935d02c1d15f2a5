"""Adapters for SAM's ViT blocks: SAM-Med2D style and Med-SA style.

Both leave the pretrained block's parameters where SAM's state dict expects
them (``blocks.<i>.norm1``, ``.attn``, ``.norm2``, ``.mlp``) and add new
sub-modules whose names start with ``adapter``, so the released weights load
unchanged and :func:`is_adapter_parameter` finds exactly the new parameters.

* ``sam_med2d``: a channel-attention + convolution adapter in parallel with
  the block's MLP::

      x = x + attn(norm1(x));  h = norm2(x);  x = x + mlp(h) + adapter(h)

* ``med_sa``: a bottleneck adapter (with its own skip) after attention and a
  scaled bottleneck (without skip) in parallel with the MLP::

      x = adapter_attn(x + attn(norm1(x)));  h = norm2(x)
      x = x + mlp(h) + scale * adapter_mlp(h)

The last projection of every adapter starts with small weights (std 1e-3)
and zero bias, so an adapted encoder starts close to the pretrained one while
every adapter parameter still receives a gradient from the first step.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.sam_compat import ImageEncoderViT

__all__ = [
    "ADAPTER_KINDS",
    "ChannelConvAdapter",
    "BottleneckAdapter",
    "AdaptedBlock",
    "add_adapters",
    "is_adapter_parameter",
]

ADAPTER_KINDS = ("sam_med2d", "med_sa")
_OUT_INIT_STD = 1e-3

_vit_module = sys.modules[ImageEncoderViT.__module__]  # SAM's image_encoder module (window helpers)


def _init_small(layer: nn.Module) -> None:
    nn.init.normal_(layer.weight, std=_OUT_INIT_STD)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class ChannelConvAdapter(nn.Module):
    """SAM-Med2D-style adapter: channel attention, then a spatial conv path.

    Channel attention is a squeeze-and-excitation gate (mean over the grid ->
    bottleneck MLP -> sigmoid). The spatial path is a stride-2 3 x 3
    convolution and a stride-2 3 x 3 transposed convolution back to the grid.

    Args:
        dim (int): Token width C.
        reduction (float): Hidden width of the gate as a fraction of ``dim``.

    Raises:
        ValueError: If ``dim`` is not positive or the hidden width rounds to 0.
    """

    def __init__(self, dim: int, reduction: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * reduction)
        if dim < 1 or hidden < 1:
            raise ValueError(f"ChannelConvAdapter needs dim >= 1 and dim * reduction >= 1, got {dim} and {reduction}")
        self.channel = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid())
        self.down = nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=3, stride=2, padding=1)  # 2n - 1 or 2n: fits odd grids
        _init_small(self.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (torch.Tensor): B x H x W x C. Returns: torch.Tensor: B x H x W x C."""
        gate = self.channel(x.mean(dim=(1, 2)))  # B x C
        gated = (x * gate[:, None, None, :]).permute(0, 3, 1, 2)  # B x C x H x W
        height, width = gated.shape[-2:]
        spatial = self.up(F.relu(self.down(gated)), output_size=(height, width))
        return spatial.permute(0, 2, 3, 1)


class BottleneckAdapter(nn.Module):
    """Med-SA-style bottleneck: ``[x +] up(GELU(down(x)))``.

    Args:
        dim (int): Token width C.
        ratio (float): Bottleneck width as a fraction of ``dim``.
        skip (bool): Add the input to the output.

    Raises:
        ValueError: If ``dim`` is not positive or the bottleneck rounds to 0.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        if dim < 1 or hidden < 1:
            raise ValueError(f"BottleneckAdapter needs dim >= 1 and dim * ratio >= 1, got {dim} and {ratio}")
        self.skip = skip
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        _init_small(self.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (torch.Tensor): ... x C. Returns: torch.Tensor: ... x C."""
        out = self.up(self.act(self.down(x)))
        return x + out if self.skip else out


class AdaptedBlock(nn.Module):
    """One of SAM's ViT blocks with adapters.

    It takes over the block's ``norm1``, ``attn``, ``norm2`` and ``mlp``
    (same names, so state-dict keys do not change) and adds ``adapter``
    (``sam_med2d``) or ``adapter_attn`` + ``adapter_mlp`` (``med_sa``).

    Args:
        block (nn.Module): A ``segment_anything`` ViT ``Block``.
        kind (str): One of :data:`ADAPTER_KINDS`.
        ratio (float): Adapter bottleneck ratio.
        mlp_scale (float): Scale of the Med-SA MLP-parallel adapter.

    Raises:
        ValueError: If ``kind`` is unknown or ``block`` lacks a ViT block's parts.
    """

    def __init__(self, block: nn.Module, kind: str, ratio: float = 0.25, mlp_scale: float = 0.5) -> None:
        super().__init__()
        if kind not in ADAPTER_KINDS:
            raise ValueError(f"unknown adapter kind {kind!r}; known: {', '.join(ADAPTER_KINDS)}")
        for part in ("norm1", "attn", "norm2", "mlp", "window_size"):
            if not hasattr(block, part):
                raise ValueError(f"{type(block).__name__} is not a SAM ViT block: it has no {part!r}")
        self.kind = kind
        self.norm1 = block.norm1
        self.attn = block.attn
        self.norm2 = block.norm2
        self.mlp = block.mlp
        self.window_size = int(block.window_size)
        dim = block.norm1.normalized_shape[0]
        if kind == "sam_med2d":
            self.adapter = ChannelConvAdapter(dim, reduction=ratio)
        else:
            self.adapter_attn = BottleneckAdapter(dim, ratio=ratio, skip=True)
            self.adapter_mlp = BottleneckAdapter(dim, ratio=ratio, skip=False)
            self.mlp_scale = float(mlp_scale)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1], x.shape[2]
        if self.window_size > 0:
            x, pad_hw = _vit_module.window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = _vit_module.window_unpartition(x, self.window_size, pad_hw, (height, width))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (torch.Tensor): B x H x W x C. Returns: torch.Tensor: B x H x W x C."""
        x = x + self._attention(self.norm1(x))
        if self.kind == "sam_med2d":
            hidden = self.norm2(x)
            return x + self.mlp(hidden) + self.adapter(hidden)
        x = self.adapter_attn(x)
        hidden = self.norm2(x)
        return x + self.mlp(hidden) + self.mlp_scale * self.adapter_mlp(hidden)


def add_adapters(encoder: ImageEncoderViT, kind: str, ratio: float = 0.25) -> ImageEncoderViT:
    """Replaces every block of ``encoder`` by an :class:`AdaptedBlock` (in place).

    Args:
        encoder (ImageEncoderViT): SAM ViT encoder (pretrained or not).
        kind (str): ``"sam_med2d"`` or ``"med_sa"``.
        ratio (float): Adapter bottleneck ratio.

    Returns:
        ImageEncoderViT: ``encoder`` itself.

    Raises:
        ValueError: If ``kind`` is unknown or the encoder already has adapters.
    """
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {', '.join(ADAPTER_KINDS)}")
    if any(isinstance(block, AdaptedBlock) for block in encoder.blocks):
        raise ValueError("the encoder already has adapters")
    for index, block in enumerate(encoder.blocks):
        encoder.blocks[index] = AdaptedBlock(block, kind, ratio=ratio)
    return encoder


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter name belongs to an adapter (a component starts with ``adapter``)."""
    return any(part.startswith("adapter") for part in name.split("."))
