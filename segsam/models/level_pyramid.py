"""Coarser levels derived from one image embedding, for PG-SAM's multi-level fusion on a cached encoder.

PG-SAM fuses features of several encoder levels in its decoder. The frozen
LiteMedSAM encoder trains nothing, so its methods read only the cached
64 x 64 embedding (:mod:`segsam.embed`); TinyViT's own intermediate stages
(128 x 128 x 128 after stage 0, 160 x 64 x 64 after stage 1) are not cached,
as they would add 5.5 MB per slice in float16 to the 2.1 MB of the
embedding. This module derives the coarser levels from the embedding instead:
each level halves the grid (a 2 x 2 stride-2 convolution, LayerNorm, GELU,
then a 3 x 3 depthwise convolution and LayerNorm), so that deeper levels see a
wider context, as a ViT's deeper blocks do. It trains with the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from segsam.models.sam_compat import LayerNorm2d

__all__ = ["EmbeddingPyramid"]


class EmbeddingPyramid(nn.Module):
    """Levels at 1/2, 1/4, ... of an image embedding's grid.

    Args:
        embed_dim (int): D, channels of the embedding (256).
        level_dim (int): Channels of every level.
        levels (int): Number of levels.

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, embed_dim: int = 256, level_dim: int = 128, levels: int = 2) -> None:
        super().__init__()
        if min(embed_dim, level_dim, levels) < 1:
            raise ValueError(
                f"sizes must be positive, got embed_dim={embed_dim}, level_dim={level_dim}, levels={levels}"
            )
        self.embed_dim = embed_dim
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(embed_dim if i == 0 else level_dim, level_dim, kernel_size=2, stride=2),
                LayerNorm2d(level_dim),
                nn.GELU(),
                nn.Conv2d(level_dim, level_dim, kernel_size=3, padding=1, groups=level_dim),
                LayerNorm2d(level_dim),
            )
            for i in range(levels)
        )

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each level, in order."""
        return tuple(stage[0].out_channels for stage in self.stages)

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Derives the levels.

        Args:
            embedding (torch.Tensor): B x D x h x w, h and w divisible by 2 ** levels.

        Returns:
            list[torch.Tensor]: B x level_dim x h / 2^i x w / 2^i for i = 1 .. levels.

        Raises:
            ValueError: If the embedding's shape does not fit.
        """
        factor = 2 ** len(self.stages)
        if embedding.ndim != 4 or embedding.shape[1] != self.embed_dim or embedding.shape[-1] % factor:
            raise ValueError(
                f"expected an embedding B x {self.embed_dim} x h x w with h, w divisible by {factor}, "
                f"got {tuple(embedding.shape)}"
            )
        levels = []
        x = embedding
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        return levels
