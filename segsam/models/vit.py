"""SAM's ViT image encoder at the 256 x 256 input of SAM-Med2D.

SAM's released ViT-B (``sam_vit_b_01ec64.pth``) was trained at 1024 x 1024:
its absolute position embedding is ``1 x 64 x 64 x 768`` and the relative
position tables of its global-attention blocks have ``2 * 64 - 1 = 127`` rows.
At 256 x 256 the patch grid is 16 x 16, so those tensors are resized when the
weights are loaded (:func:`resize_vit_state`):

* the absolute position embedding bicubically, over its 2-D grid;
* each relative position table linearly, along the table (the same
  interpolation :func:`segment_anything.modeling.image_encoder.get_rel_pos`
  applies on the fly when a table does not fit).

Windowed blocks keep their tables (their size depends on the window, 14, not
on the image). Every other tensor loads unchanged, and adapter parameters
(:mod:`segsam.models.adapters`) are allowed to be missing from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.adapters import is_adapter_parameter
from segsam.models.sam_compat import ImageEncoderViT

__all__ = [
    "ViTGeometry",
    "VIT_B",
    "build_sam_vit",
    "resize_vit_state",
    "load_vit_weights",
    "level_taps",
    "encode_with_levels",
]


@dataclass(frozen=True)
class ViTGeometry:
    """Shape of a SAM ViT image encoder.

    The defaults are SAM's ViT-B at 256 x 256 input (:data:`VIT_B`). A smaller
    geometry (fewer blocks, narrower) builds through the same code, for tests.

    Attributes:
        image_size: Input side in pixels (square input).
        patch_size: Patch side in pixels.
        embed_dim: Token width.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        global_attn_indexes: Blocks with global attention; the others use
            windowed attention.
        window_size: Window side (in patches) of the windowed blocks.
        out_chans: Channels of the neck's output (the image embedding).

    Raises:
        ValueError: If a size is not positive, the image is not a whole
            number of patches, the heads do not divide the width, or a global
            index is outside ``range(depth)``.
    """

    image_size: int = 256
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    out_chans: int = 256

    def __post_init__(self) -> None:
        for field in ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "window_size", "out_chans"):
            if getattr(self, field) < 1:
                raise ValueError(f"ViTGeometry.{field} must be positive, got {getattr(self, field)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide embed_dim {self.embed_dim}")
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_attn_indexes {bad} are outside the {self.depth} blocks")

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding (patch grid), e.g. 16 at 256 / 16."""
        return self.image_size // self.patch_size


#: SAM ViT-B at the 256 x 256 input used by SAM-Med2D and SEG-SAM.
VIT_B = ViTGeometry()


def build_sam_vit(geometry: ViTGeometry = VIT_B) -> ImageEncoderViT:
    """Builds SAM's ViT image encoder (random weights) for a geometry.

    The constructor arguments are those of SAM's ``build_sam_vit_b`` except
    the input size (and whatever ``geometry`` changes).

    Args:
        geometry (ViTGeometry): Encoder shape, ViT-B at 256 by default.

    Returns:
        ImageEncoderViT: Maps B x 3 x S x S to B x out_chans x S/16 x S/16.
    """
    return ImageEncoderViT(
        img_size=geometry.image_size,
        patch_size=geometry.patch_size,
        in_chans=3,
        embed_dim=geometry.embed_dim,
        depth=geometry.depth,
        num_heads=geometry.num_heads,
        mlp_ratio=4.0,
        out_chans=geometry.out_chans,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
        use_abs_pos=True,
        use_rel_pos=True,
        rel_pos_zero_init=True,
        window_size=geometry.window_size,
        global_attn_indexes=geometry.global_attn_indexes,
    )


def _resize_pos_embed(pos_embed: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1 x H x W x C -> 1 x h x w x C, bicubic over the grid."""
    grid = pos_embed.permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """L x C -> length x C, linear along L (as SAM's ``get_rel_pos``)."""
    resized = F.interpolate(table.float().t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t().to(table.dtype).contiguous()


def resize_vit_state(
    state: Mapping[str, torch.Tensor], encoder: ImageEncoderViT
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fits a ViT state dict trained at another input size to ``encoder``.

    Args:
        state (Mapping[str, torch.Tensor]): Encoder state dict (keys without
          the ``image_encoder.`` prefix), e.g. from ``sam_vit_b_01ec64.pth``.
        encoder (ImageEncoderViT): The target encoder; only its tensor shapes
          are read.

    Returns:
        dict[str, torch.Tensor]: A copy of ``state`` with ``pos_embed`` and
          every ``*.attn.rel_pos_h`` / ``rel_pos_w`` resized to the target's
          shapes; all other tensors are passed through.
        list[str]: The keys that were resized.

    Raises:
        ValueError: If a position tensor differs in a way resizing cannot fix
          (different width or number of dimensions).
    """
    target = encoder.state_dict()
    out: dict[str, torch.Tensor] = dict(state)
    resized: list[str] = []
    for key, value in state.items():
        if key not in target or target[key].shape == value.shape:
            continue
        want = target[key].shape
        if key == "pos_embed":
            if value.ndim != 4 or want[0] != value.shape[0] or want[-1] != value.shape[-1]:
                raise ValueError(f"cannot resize pos_embed {tuple(value.shape)} to {tuple(want)}")
            out[key] = _resize_pos_embed(value, (want[1], want[2]))
        elif key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")):
            if value.ndim != 2 or want[1] != value.shape[1]:
                raise ValueError(f"cannot resize {key} {tuple(value.shape)} to {tuple(want)}")
            out[key] = _resize_rel_pos(value, want[0])
        else:
            continue  # a genuine mismatch: load_state_dict reports it
        resized.append(key)
    return out, resized


def load_vit_weights(encoder: ImageEncoderViT, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Loads SAM ViT weights into ``encoder``, resizing position tensors.

    Adapter parameters (any name with a component starting with
    ``adapter``) may be missing from ``state``: they keep their
    initialisation. Every other key must match.

    Args:
        encoder (ImageEncoderViT): Target encoder (possibly with adapters).
        state (Mapping[str, torch.Tensor]): Encoder state dict without the
          ``image_encoder.`` prefix.

    Returns:
        list[str]: Keys whose tensors were resized.

    Raises:
        RuntimeError: If keys are missing (other than adapters), unexpected,
          or of a shape resizing cannot fix.
    """
    fitted, resized = resize_vit_state(state, encoder)
    result = encoder.load_state_dict(fitted, strict=False)
    missing = [k for k in result.missing_keys if not is_adapter_parameter(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            "ViT weights do not fit the encoder: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )
    return resized


def level_taps(geometry: ViTGeometry) -> tuple[int, ...]:
    """The blocks whose outputs are a ViT's intermediate levels (PG-SAM's multi-level fusion).

    The global-attention blocks before the last block (2, 5 and 8 for ViT-B):
    each has seen the whole image at a different depth. A geometry without
    such a block (small test encoders) taps its first block.

    Args:
        geometry (ViTGeometry): The encoder's shape.

    Returns:
        tuple[int, ...]: Block indices, ascending.
    """
    taps = tuple(sorted(i for i in geometry.global_attn_indexes if i < geometry.depth - 1))
    return taps or (0,)


def encode_with_levels(
    encoder: ImageEncoderViT, images: torch.Tensor, taps: tuple[int, ...]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs SAM's ViT like its ``forward`` and also returns the outputs of the blocks ``taps``.

    Args:
        encoder (ImageEncoderViT): SAM ViT (optionally with adapters or LoRA).
        images (torch.Tensor): B x 3 x S x S, SAM-normalised
          (:func:`segsam.models.preprocess.encoder_input`).
        taps (tuple[int, ...]): Block indices (:func:`level_taps`).

    Returns:
        torch.Tensor: B x out_chans x S/16 x S/16, the image embedding (the same as ``encoder(images)``).
        list[torch.Tensor]: One B x embed_dim x S/16 x S/16 map per tap, in ``taps`` order.

    Raises:
        ValueError: If a tap is not a block index.
    """
    bad = [t for t in taps if not 0 <= t < len(encoder.blocks)]
    if bad:
        raise ValueError(f"taps {bad} are outside the encoder's {len(encoder.blocks)} blocks")
    x = encoder.patch_embed(images)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    levels = {}
    for index, block in enumerate(encoder.blocks):
        x = block(x)
        if index in taps:
            levels[index] = x.permute(0, 3, 1, 2)
    return encoder.neck(x.permute(0, 3, 1, 2)), [levels[t] for t in taps]
