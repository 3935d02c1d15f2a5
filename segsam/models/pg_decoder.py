"""PG-SAM's prompt-free semantic decoder: SAM's two-way decoder with one output token per class.

SAM's mask decoder turns prompt tokens and an image embedding into masks of
one object. PG-SAM's decoder keeps its machinery and weights where they fit
(the two-way transformer, the 4x output upscaling, the hypernetwork MLP and the
positional encoding load from SAM's / LiteMedSAM's checkpoint) but segments
every class at once:

* output tokens: C + 1 learned class tokens (0 = background, k + 1 = class k)
  instead of SAM's IoU and mask tokens; the mask optimiser may add an update
  to them in later rounds;
* prompts: the prior aligner's sparse tokens (one per class) follow the
  output tokens, and its dense embedding is added to the image embedding,
  exactly where SAM puts point / box tokens and a mask prompt;
* after the transformer, the multi-level fusion's features (when on) are
  added to the image features, which are upscaled 4x;
* one hypernetwork MLP, shared by the C + 1 refined class tokens, gives each
  its mask weights; dotted with the upscaled features they are the
  B x (C + 1) x 4h x 4w logits.
"""

from __future__ import annotations

import torch
from torch import nn

from segsam.models.sam_compat import LayerNorm2d, PositionEmbeddingRandom
from segsam.models.sawd import MLP

__all__ = ["PriorGuidedDecoder"]


class PriorGuidedDecoder(nn.Module):
    """SAM-style decoder of C + 1 class masks from prior prompts.

    Args:
        num_classes (int): C, the vocabulary size (C + 1 outputs with background).
        transformer (nn.Module): SAM's ``TwoWayTransformer`` of width D.
        embed_dim (int): D (256 for SAM).
        embedding_size (int): Side h = w of the image embedding (64 for TinyViT, 16 for ViT-B at 256).

    Raises:
        ValueError: If a size is not positive or D is not a multiple of 8.
    """

    def __init__(
        self, num_classes: int, transformer: nn.Module, embed_dim: int = 256, embedding_size: int = 64
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"num_classes and embedding_size must be positive, got {num_classes}, {embedding_size}")
        if embed_dim < 8 or embed_dim % 8:
            raise ValueError(f"embed_dim must be a positive multiple of 8, got {embed_dim}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.embedding_size = embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.class_tokens = nn.Embedding(num_classes + 1, embed_dim)
        self.transformer = transformer
        # SAM's output upscaling, same layout (its weights load unchanged): D -> D/4 -> D/8 channels, 4x the grid
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(embed_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim // 4, embed_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.hypernetwork = MLP(embed_dim, embed_dim, embed_dim // 8, 3)

    def dense_pe(self) -> torch.Tensor:
        """1 x D x h x w positional encoding of the embedding grid (as SAM's ``get_dense_pe``)."""
        return self.pe_layer((self.embedding_size, self.embedding_size)).unsqueeze(0)

    def forward(
        self,
        embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        token_update: torch.Tensor | None = None,
        fused: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decodes every class of B images.

        Args:
            embeddings (torch.Tensor): B x D x h x w image embeddings.
            image_pe (torch.Tensor): 1 x D x h x w (:meth:`dense_pe`).
            sparse (torch.Tensor): B x T x D prompt tokens (the prior aligner's T = C).
            dense (torch.Tensor): B x D x h x w dense prompt embedding.
            token_update (torch.Tensor | None): B x (C + 1) x D added to the
              class tokens (the mask optimiser's feedback), or None.
            fused (torch.Tensor | None): B x D x h x w multi-level features, or None.

        Returns:
            torch.Tensor: B x (C + 1) x 4h x 4w class logits.

        Raises:
            ValueError: If the shapes disagree.
        """
        batch, dim, height, width = embeddings.shape
        grid = (self.embedding_size, self.embedding_size)
        if dim != self.embed_dim or (height, width) != grid:
            raise ValueError(
                f"expected embeddings B x {self.embed_dim} x {grid[0]} x {grid[1]}, got {tuple(embeddings.shape)}"
            )
        if tuple(dense.shape) != tuple(embeddings.shape) or sparse.ndim != 3 or sparse.shape[0] != batch:
            raise ValueError(
                f"expected dense prompts {tuple(embeddings.shape)} and sparse B x T x {dim}, "
                f"got {tuple(dense.shape)} and {tuple(sparse.shape)}"
            )
        tokens = self.class_tokens.weight.unsqueeze(0).expand(batch, -1, -1)
        if token_update is not None:
            tokens = tokens + token_update
        hs, src = self.transformer(embeddings + dense, image_pe, torch.cat([tokens, sparse], dim=1))
        features = src.transpose(1, 2).reshape(batch, dim, height, width)
        if fused is not None:
            features = features + fused
        upscaled = self.output_upscaling(features)  # B x D/8 x 4h x 4w
        weights = self.hypernetwork(hs[:, : self.num_classes + 1])  # B x (C + 1) x D/8
        return (weights @ upscaled.flatten(2)).view(batch, self.num_classes + 1, *upscaled.shape[-2:])
