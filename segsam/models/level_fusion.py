"""PG-SAM's multi-level feature fusion (MLFF): features of several levels added to the decoder's image features.

Each level is projected to the decoder width D (1 x 1 convolution +
LayerNorm), resized bilinearly to the embedding's grid, and the levels are
summed with learned softmax weights (none for a single level); a 3 x 3 depthwise convolution and a
LayerNorm mix the sum. The decoder adds the result to its image features
after the two-way transformer, before the 4x upscaling that the class masks
are read from (:class:`~segsam.models.pg_decoder.PriorGuidedDecoder`).

Where the levels come from depends on the encoder
(:class:`~segsam.models.pg_sam.PGSam`): the intermediate blocks of a ViT whose
LoRA trains (the images are encoded inside the forward pass), or, for a
frozen encoder read from the embedding cache, the coarser levels an
:class:`~segsam.models.level_pyramid.EmbeddingPyramid` derives from the
embedding (then part of this module).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.level_pyramid import EmbeddingPyramid
from segsam.models.sam_compat import LayerNorm2d

__all__ = ["MultiLevelFusion"]


class MultiLevelFusion(nn.Module):
    """Fuses L feature levels into one B x D x h x w map on the embedding's grid.

    Args:
        level_channels (Sequence[int]): Channels of each level, in order.
        embed_dim (int): D, the decoder width.
        pyramid (EmbeddingPyramid | None): Derives the levels from the
          embedding (its channels must be ``level_channels``); None: the
          caller passes the levels (an encoder's intermediate blocks).

    Raises:
        ValueError: If there is no level, a size is not positive, or the pyramid's channels differ.
    """

    def __init__(
        self, level_channels: Sequence[int], embed_dim: int = 256, pyramid: EmbeddingPyramid | None = None
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in level_channels)
        if not channels or min(channels) < 1 or embed_dim < 1:
            raise ValueError(
                f"need at least one level of positive width and embed_dim > 0, got {channels}, {embed_dim}"
            )
        if pyramid is not None and pyramid.channels != channels:
            raise ValueError(f"the pyramid makes levels of {pyramid.channels} channels, not {channels}")
        self.level_channels = channels
        self.embed_dim = embed_dim
        self.pyramid = pyramid
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, embed_dim, kernel_size=1, bias=False), LayerNorm2d(embed_dim)) for c in channels
        )
        # learned level weights (softmax); a single level needs none
        self.level_logits = nn.Parameter(torch.zeros(len(channels))) if len(channels) > 1 else None
        self.mix = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim), LayerNorm2d(embed_dim)
        )

    def forward(self, embedding: torch.Tensor, levels: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Fuses the levels.

        Args:
            embedding (torch.Tensor): B x D x h x w image embedding (its grid
              is the output's; the pyramid's input).
            levels (Sequence[torch.Tensor] | None): B x c_l x h_l x w_l per
              level; None when the module has a pyramid.

        Returns:
            torch.Tensor: B x D x h x w.

        Raises:
            ValueError: If the levels are missing or do not fit.
        """
        if self.pyramid is not None:
            levels = self.pyramid(embedding)
        if levels is None or len(levels) != len(self.level_channels):
            raise ValueError(f"expected {len(self.level_channels)} levels, got {0 if levels is None else len(levels)}")
        size = tuple(embedding.shape[-2:])
        weights = (1.0,) if self.level_logits is None else torch.softmax(self.level_logits, dim=0).unbind(0)
        fused = None
        for weight, project, level in zip(weights, self.projections, levels):
            part = project(level)
            if tuple(part.shape[-2:]) != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            fused = weight * part if fused is None else fused + weight * part
        return self.mix(fused)
