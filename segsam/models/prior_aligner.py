"""PG-SAM's fine-grained modality prior aligner (FGMPA): class text priors -> the decoder's prompts.

PG-SAM has no user prompt. Its prompts come from a prior for every class: a
medical LLM's fine-grained, anatomy-aware description of the class (here the
class-knowledge stage's texture / shape / position descriptions, embedded
once into E_t, C x d_text; :mod:`segsam.text`). The aligner

1. projects E_t to the decoder width D (linear + LayerNorm): one prior token
   per class (the ``pg_sam_no_text`` ablation uses C learned class queries
   instead and never reads the text);
2. aligns the tokens with the image: self-attention among the C tokens, then
   cross-attention from the tokens to the image embedding F, then an MLP
   (SAM's token-to-image conventions, :class:`~segsam.models.sawd.TokenImageBlock`);
3. turns the aligned tokens into the two prompt embeddings SAM's decoder
   expects: sparse tokens (an MLP of each aligned token, B x C x D) and a
   dense embedding made from the *guide map*, the similarity of every
   aligned class token with every pixel of F (B x C x h x w), through two
   1 x 1 convolutions (B x D x h x w).

The class text does not depend on the image or on its labels, so inference
needs nothing but the image and the vocabulary's embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from segsam.models.sam_compat import LayerNorm2d
from segsam.models.sawd import MLP, TokenImageBlock

__all__ = ["AlignedPriors", "PriorAligner"]


@dataclass
class AlignedPriors:
    """The aligner's output for B images.

    Attributes:
        sparse: B x C x D prompt tokens, one per class.
        dense: B x D x h x w dense prompt embedding.
        guide: B x C x h x w guide map (class-token / pixel similarity logits).
    """

    sparse: torch.Tensor
    dense: torch.Tensor
    guide: torch.Tensor


class PriorAligner(nn.Module):
    """Aligns one prior per class with the image embedding and makes the decoder's prompts from them.

    Args:
        num_classes (int): C, the vocabulary size.
        embed_dim (int): D, the decoder width (256 for SAM).
        text_dim (int | None): d_text of the class text embeddings; None: no
          text priors, C learned class queries instead (``pg_sam_no_text``).
        num_heads (int): Attention heads (must divide D / 2).
        mlp_dim (int): Hidden width of the alignment block's MLP.

    Raises:
        ValueError: If a size is not positive or the heads do not fit the width.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int = 256,
        text_dim: int | None = None,
        num_heads: int = 8,
        mlp_dim: int = 1024,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if text_dim is not None and text_dim < 1:
            raise ValueError(f"text_dim must be positive or None (no text priors), got {text_dim}")
        if embed_dim < 8 or embed_dim % 8:
            raise ValueError(f"embed_dim must be a positive multiple of 8, got {embed_dim}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.text_dim = text_dim
        if text_dim is not None:
            self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.LayerNorm(embed_dim))
        else:
            self.class_queries = nn.Embedding(num_classes, embed_dim)
        self.align = TokenImageBlock(embed_dim, num_heads, mlp_dim, self_attention=True)
        self.token_key = nn.Linear(embed_dim, embed_dim)
        self.to_sparse = MLP(embed_dim, embed_dim, embed_dim, 2)
        self.to_dense = nn.Sequential(
            nn.Conv2d(num_classes, embed_dim // 4, kernel_size=1),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.Conv2d(embed_dim // 4, embed_dim, kernel_size=1),
        )

    @property
    def uses_text(self) -> bool:
        """Whether the priors come from the class text (False: learned class queries)."""
        return self.text_dim is not None

    def priors(self, text: torch.Tensor | None) -> torch.Tensor:
        """The C x D prior tokens: the projected class text, or the learned class queries.

        Args:
            text (torch.Tensor | None): C x d_text class text embeddings
              (required with text priors, ignored without).

        Raises:
            ValueError: If the text is missing or not C x d_text.
        """
        if self.text_dim is None:
            return self.class_queries.weight
        if text is None:
            raise ValueError("this aligner has text priors: pass the class text embeddings (C x d_text)")
        if text.ndim != 2 or tuple(text.shape) != (self.num_classes, self.text_dim):
            raise ValueError(f"expected text embeddings {self.num_classes} x {self.text_dim}, got {tuple(text.shape)}")
        weight = self.text_proj[0].weight
        return self.text_proj(text.to(device=weight.device, dtype=weight.dtype))

    def forward(
        self, embeddings: torch.Tensor, image_pe: torch.Tensor, text: torch.Tensor | None = None
    ) -> AlignedPriors:
        """Aligns the class priors with B images.

        Args:
            embeddings (torch.Tensor): B x D x h x w image embeddings F.
            image_pe (torch.Tensor): 1 x D x h x w dense positional encoding.
            text (torch.Tensor | None): C x d_text class text embeddings (see :meth:`priors`).

        Returns:
            AlignedPriors: Sparse and dense prompts and the guide map.

        Raises:
            ValueError: If the embeddings are not B x D x h x w or the text does not fit.
        """
        if embeddings.ndim != 4 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"expected image embeddings B x {self.embed_dim} x h x w, got {tuple(embeddings.shape)}")
        num = embeddings.shape[0]
        priors = self.priors(text).unsqueeze(0)  # 1 x C x D
        image = embeddings.flatten(2).transpose(1, 2)  # B x hw x D
        pos = image_pe.flatten(2).transpose(1, 2)
        tokens = self.align(priors.expand(num, -1, -1), priors, image, pos)  # B x C x D
        guide = torch.einsum("bkd,bdhw->bkhw", self.token_key(tokens), embeddings) / math.sqrt(self.embed_dim)
        return AlignedPriors(sparse=self.to_sparse(tokens), dense=self.to_dense(guide), guide=guide)
