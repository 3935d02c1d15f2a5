"""TinyViT image encoder, in the LiteMedSAM (distilled MedSAM) configuration.

TinyViT (Wu et al., ECCV 2022) is a hierarchical encoder: a convolutional
first stage of inverted-residual (MBConv) blocks followed by stages of
windowed self-attention blocks, with a strided "patch merging" convolution
between stages. MobileSAM distilled SAM's ViT into it; LiteMedSAM distilled
MedSAM into a variant that takes a 256 x 256 image, embeds it with two 1x1
convolutions (no downsampling) and leaves the last merge at stride 1, so the
stages run at 256, 128, 64 and 64 pixels and the neck returns the
B x 256 x 64 x 64 embedding that SAM's prompt encoder and mask decoder expect.

Parameter names follow the LiteMedSAM checkpoint (``patch_embed.seq.*``,
``layers.<i>.blocks.<j>.*``, ``layers.<i>.downsample.*``, ``neck.*``), so
``TinyViT().load_state_dict(state, strict=True)`` takes its ``image_encoder.``
weights unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segsam.models.sam_compat import LayerNorm2d

__all__ = [
    "Conv2dBN",
    "PatchEmbed",
    "MBConv",
    "PatchMerging",
    "WindowAttention",
    "FeedForward",
    "TinyViTBlock",
    "ConvStage",
    "AttentionStage",
    "TinyViT",
]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value}")


class Conv2dBN(nn.Module):
    """A bias-free convolution followed by batch normalisation.

    Args:
        in_chans (int): Input channels.
        out_chans (int): Output channels.
        kernel_size (int): Square kernel size.
        stride (int): Convolution stride.
        groups (int): Convolution groups (``groups == in_chans`` gives a
          depthwise convolution).
        bn_weight_init (float): Initial value of the batch-norm scale; 0 makes
          a residual branch start as the identity.

    Raises:
        ValueError: If a size is not positive or the channels are not
          divisible by ``groups``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        _check_positive(in_chans=in_chans, out_chans=out_chans, kernel_size=kernel_size, stride=stride, groups=groups)
        if in_chans % groups or out_chans % groups:
            raise ValueError(f"channels ({in_chans} -> {out_chans}) must be divisible by groups={groups}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size ('same' padding), got {kernel_size}")
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x in_chans x H x W.

        Returns:
            torch.Tensor: B x out_chans x H' x W' (H' = ceil(H / stride)).
        """
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """Pixel embedding: two 1x1 Conv+BN layers with a GELU between them.

    Args:
        in_chans (int): Image channels.
        embed_dim (int): Output channels; the hidden layer has half as many.

    Raises:
        ValueError: If a size is not positive or ``embed_dim`` is odd.
    """

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        _check_positive(in_chans=in_chans, embed_dim=embed_dim)
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x in_chans x H x W.

        Returns:
            torch.Tensor: B x embed_dim x H x W.
        """
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted-residual block: 1x1 expand, 3x3 depthwise, 1x1 project.

    GELU follows the expansion, the depthwise convolution and the residual sum.

    Args:
        dim (int): Input and output channels.
        expand_ratio (float): Hidden channels = ``int(dim * expand_ratio)``.

    Raises:
        ValueError: If ``dim`` or the hidden width is not positive.
    """

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        _check_positive(dim=dim, hidden_channels=hidden)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim, bn_weight_init=0.0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x dim x H x W.

        Returns:
            torch.Tensor: B x dim x H x W.
        """
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(x + self.conv3(y))


class PatchMerging(nn.Module):
    """Between-stage downsampling: 1x1 conv, strided 3x3 depthwise conv, 1x1 conv.

    Args:
        dim (int): Input channels.
        out_dim (int): Output channels.
        stride (int): Stride of the depthwise convolution (2 halves the
          resolution; LiteMedSAM's last merge uses 1).

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        _check_positive(dim=dim, out_dim=out_dim, stride=stride)
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x dim x H x W.

        Returns:
            torch.Tensor: B x out_dim x ceil(H / stride) x ceil(W / stride).
        """
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one square window.

    Each head adds a learned bias that depends only on the absolute offset
    (|dy|, |dx|) between the two positions, so the table holds
    ``window_size ** 2`` entries per head; the token-pair -> entry index is a
    non-persistent buffer rebuilt from ``window_size``.

    Args:
        dim (int): Token channels.
        num_heads (int): Attention heads; ``dim`` must be divisible by it.
        window_size (int): Side of the square window (tokens per window =
          ``window_size ** 2``).

    Raises:
        ValueError: If a size is not positive or ``dim % num_heads != 0``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        _check_positive(dim=dim, num_heads=num_heads, window_size=window_size)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size

        self.norm = nn.LayerNorm(dim)
        # Output features are grouped by head: [q_h, k_h, v_h] for h = 0..num_heads-1.
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))

        rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        offset_index = (rows[:, None] - rows[None, :]).abs() * window_size + (cols[:, None] - cols[None, :]).abs()
        self.register_buffer("attention_bias_idxs", offset_index, persistent=False)

    def relative_bias(self) -> torch.Tensor:
        """Returns:
        torch.Tensor: num_heads x N x N additive attention bias, N = window_size ** 2.
        """
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x N x dim tokens of B windows, N = window_size ** 2,
              in row-major order within each window.

        Returns:
            torch.Tensor: B x N x dim.

        Raises:
            ValueError: If N does not match the window size.
        """
        batch, tokens, dim = x.shape
        if tokens != self.window_size**2:
            raise ValueError(f"expected {self.window_size**2} tokens per window, got {tokens}")
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).chunk(3, dim=-1)  # each B x heads x N x head_dim
        bias = self.relative_bias().to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """Pre-norm two-layer MLP with GELU.

    Args:
        dim (int): Token channels.
        hidden_dim (int): Hidden width.

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        _check_positive(dim=dim, hidden_dim=hidden_dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): ... x dim.

        Returns:
            torch.Tensor: ... x dim.
        """
        return self.fc2(self.act(self.fc1(self.norm(x))))


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads a feature map bottom/right to whole windows and splits it into windows.

    Args:
        x (torch.Tensor): B x H x W x C.
        window_size (int): Window side.

    Returns:
        torch.Tensor: (B * nH * nW) x window_size**2 x C windows, row-major.
        tuple[int, int]: the padded size (Hp, Wp).
    """
    batch, height, width, chans = x.shape
    pad_h = -height % window_size
    pad_w = -width % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window_size, window_size, wp // window_size, window_size, chans)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, chans)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, removing the padding.

    Args:
        windows (torch.Tensor): (B * nH * nW) x window_size**2 x C.
        window_size (int): Window side.
        padded_hw (tuple[int, int]): (Hp, Wp) returned by :func:`window_partition`.
        hw (tuple[int, int]): The unpadded (H, W).

    Returns:
        torch.Tensor: B x H x W x C.
    """
    hp, wp = padded_hw
    n_h, n_w = hp // window_size, wp // window_size
    chans = windows.shape[-1]
    x = windows.view(-1, n_h, n_w, window_size, window_size, chans)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, chans)
    return x[:, : hw[0], : hw[1]]


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise "local" convolution, then an MLP.

    ``x = x + attn(x)`` (over non-overlapping windows, the map zero-padded
    bottom/right to whole windows; the padded positions are normalised and
    attended to like any other, as in the trained model), then
    ``x = local_conv(x)`` (depthwise Conv+BN, no residual), then
    ``x = x + mlp(x)``.

    Args:
        dim (int): Channels.
        num_heads (int): Attention heads.
        window_size (int): Attention window side.
        mlp_ratio (float): MLP hidden width = ``int(dim * mlp_ratio)``.
        local_conv_size (int): Kernel size of the depthwise convolution (odd).

    Raises:
        ValueError: If a size is invalid (see the sub-modules).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = Conv2dBN(dim, dim, kernel_size=local_conv_size, groups=dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x H x W x C (channels last).

        Returns:
            torch.Tensor: B x H x W x C.
        """
        height, width = x.shape[1:3]
        windows, padded_hw = window_partition(x, self.window_size)
        x = x + window_unpartition(self.attn(windows), self.window_size, padded_hw, (height, width))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """A stage of MBConv blocks, optionally followed by patch merging.

    Args:
        dim (int): Channels of the blocks.
        depth (int): Number of blocks.
        expand_ratio (float): MBConv expansion ratio.
        out_dim (int | None): Channels after merging; None for no merging.
        merge_stride (int): Stride of the merging.

    Raises:
        ValueError: If ``depth`` is not positive (or a sub-module rejects a size).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        expand_ratio: float = 4.0,
        out_dim: int | None = None,
        merge_stride: int = 2,
    ) -> None:
        super().__init__()
        _check_positive(depth=depth)
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x dim x H x W.

        Returns:
            torch.Tensor: B x out_dim x H' x W' (B x dim x H x W without merging).
        """
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """A stage of :class:`TinyViTBlock`, optionally followed by patch merging.

    Args:
        dim (int): Channels of the blocks.
        depth (int): Number of blocks.
        num_heads (int): Attention heads.
        window_size (int): Attention window side.
        mlp_ratio (float): MLP expansion ratio.
        local_conv_size (int): Depthwise kernel size between attention and MLP.
        out_dim (int | None): Channels after merging; None for no merging.
        merge_stride (int): Stride of the merging.

    Raises:
        ValueError: If ``depth`` is not positive (or a sub-module rejects a size).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_dim: int | None = None,
        merge_stride: int = 2,
    ) -> None:
        super().__init__()
        _check_positive(depth=depth)
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x (torch.Tensor): B x dim x H x W.

        Returns:
            torch.Tensor: B x out_dim x H' x W' (B x dim x H x W without merging).
        """
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with a SAM neck (LiteMedSAM defaults).

    Stage 0 is convolutional (MBConv), the others windowed attention; stage
    ``i < last`` ends with a patch merging to ``embed_dims[i + 1]`` channels at
    stride ``merge_strides[i]``. The neck maps the last stage to ``out_chans``
    channels: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (convs without bias).

    Args:
        img_size (int): Side of the square input image.
        in_chans (int): Image channels.
        embed_dims (Sequence[int]): Channels of each stage.
        depths (Sequence[int]): Blocks per stage.
        num_heads (Sequence[int]): Heads per stage (entry 0, the conv stage, unused).
        window_sizes (Sequence[int]): Window side per stage (entry 0 unused).
        merge_strides (Sequence[int]): Stride of each of the ``len(depths) - 1`` merges.
        mlp_ratio (float): MLP expansion ratio of the attention blocks.
        mbconv_expand_ratio (float): Expansion ratio of the MBConv blocks.
        local_conv_size (int): Depthwise kernel size in the attention blocks.
        out_chans (int): Channels of the output embedding.

    Raises:
        ValueError: If the per-stage sequences disagree in length, there are
          fewer than two stages, or a size is invalid.
    """

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        _check_positive(img_size=img_size, in_chans=in_chans, out_chans=out_chans)
        num_stages = len(depths)
        if num_stages < 2:
            raise ValueError(f"TinyViT needs at least two stages (one conv, one attention), got {num_stages}")
        for name, values in (("embed_dims", embed_dims), ("num_heads", num_heads), ("window_sizes", window_sizes)):
            if len(values) != num_stages:
                raise ValueError(f"{name} has {len(values)} entries but depths has {num_stages}")
        if len(merge_strides) != num_stages - 1:
            raise ValueError(f"merge_strides needs {num_stages - 1} entries (one per merge), got {len(merge_strides)}")

        self.img_size = img_size
        self.in_chans = in_chans
        self.out_chans = out_chans
        total_stride = 1
        for stride in merge_strides:
            total_stride *= stride
        if img_size % total_stride:
            raise ValueError(f"img_size ({img_size}) must be divisible by the total merge stride ({total_stride})")
        self.embedding_size = img_size // total_stride

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            last = i == num_stages - 1
            out_dim = None if last else embed_dims[i + 1]
            stride = 1 if last else merge_strides[i]
            if i == 0:
                stage: nn.Module = ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, out_dim, stride)
            else:
                stage = AttentionStage(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    local_conv_size,
                    out_dim,
                    stride,
                )
            self.layers.append(stage)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes a batch of images.

        Args:
            x (torch.Tensor): B x in_chans x img_size x img_size, preprocessed
              as in :func:`segsam.models.preprocess.prepare_image`.

        Returns:
            torch.Tensor: B x out_chans x E x E image embedding,
              E = img_size / prod(merge_strides) (64 for LiteMedSAM).

        Raises:
            ValueError: If the input shape is not B x in_chans x img_size x img_size.
        """
        expected = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input B x {' x '.join(map(str, expected))}, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)
