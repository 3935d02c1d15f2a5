"""PG-SAM's iterative mask optimiser (IMO): each round's class masks steer the next round.

After a decoding round, the C + 1 class probabilities (softmax of the logits,
B x (C + 1) x 4h x 4w) are fed back in two ways:

* as a dense prompt: downscaled 4x by strided convolutions to D channels on
  the embedding grid, as SAM's prompt encoder embeds a mask prompt; it is added to
  the prior aligner's dense prompt;
* as an update of the class tokens: the image embedding averaged over each
  class's predicted region (probabilities pooled to the embedding grid),
  through an MLP.

The decoder (shared weights) then runs again; K rounds in all, the last one's
logits are the prediction, and training averages the loss over the rounds
(:class:`~segsam.models.losses.PromptFreeLoss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.sam_compat import LayerNorm2d
from segsam.models.sawd import MLP

__all__ = ["MaskFeedback", "IterativeMaskOptimiser"]


@dataclass
class MaskFeedback:
    """What one round's masks give the next round.

    Attributes:
        dense: B x D x h x w, added to the dense prompt.
        tokens: B x (C + 1) x D, added to the decoder's class tokens.
    """

    dense: torch.Tensor
    tokens: torch.Tensor


class IterativeMaskOptimiser(nn.Module):
    """Turns a round's class logits into the next round's prompt feedback.

    Args:
        num_classes (int): C (the logits have C + 1 channels).
        embed_dim (int): D, the decoder width (a multiple of 16).

    Raises:
        ValueError: If a size is not positive or D is not a multiple of 16.
    """

    def __init__(self, num_classes: int, embed_dim: int = 256) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if embed_dim < 16 or embed_dim % 16:
            raise ValueError(f"embed_dim must be a positive multiple of 16, got {embed_dim}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.mask_embed = nn.Sequential(
            nn.Conv2d(num_classes + 1, embed_dim // 16, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 16),
            nn.GELU(),
            nn.Conv2d(embed_dim // 16, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.Conv2d(embed_dim // 4, embed_dim, kernel_size=1),
        )
        self.token_mlp = MLP(embed_dim, embed_dim, embed_dim, 2)

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor) -> MaskFeedback:
        """The feedback of one round.

        Args:
            logits (torch.Tensor): B x (C + 1) x 4h x 4w class logits of the round.
            embeddings (torch.Tensor): B x D x h x w image embeddings.

        Returns:
            MaskFeedback: The dense prompt and the class-token update.

        Raises:
            ValueError: If the shapes do not fit.
        """
        batch, dim, height, width = embeddings.shape
        expected = (batch, self.num_classes + 1, 4 * height, 4 * width)
        if dim != self.embed_dim or tuple(logits.shape) != expected:
            raise ValueError(
                f"expected logits {expected} for embeddings B x {self.embed_dim} x h x w, "
                f"got {tuple(logits.shape)} and {tuple(embeddings.shape)}"
            )
        probabilities = torch.softmax(logits, dim=1)
        regions = F.adaptive_avg_pool2d(probabilities, (height, width))  # B x (C + 1) x h x w
        area = regions.sum(dim=(2, 3)).unsqueeze(-1)  # B x (C + 1) x 1
        pooled = torch.einsum("bkhw,bdhw->bkd", regions, embeddings) / (area + 1e-6)
        return MaskFeedback(dense=self.mask_embed(probabilities), tokens=self.token_mlp(pooled))
