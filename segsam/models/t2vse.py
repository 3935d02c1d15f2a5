"""T2VSE: text-to-vision semantic enhancement (docs/methods.md#t2vse, paper §3.2.2).

The class descriptions' text embeddings E_t (C x d_text, computed once by
:mod:`segsam.text.embed`) are projected to the decoder width D. A learnable
text summary token is put in front of them and one self-attention layer mixes
the C + 1 tokens. A cross-attention layer then lets these tokens (queries)
read the image embedding F (keys and values), followed by an MLP. The summary
token, through a last MLP, becomes one extra prompt token (1 x D per prompt)
that the model appends to SAGD's prompt tokens (and, in variant
``t2vse_v1``, to SAWD's as well).

The self-attention step does not depend on the image, so it runs once per
call; the rest runs once per image, and every prompt of an image gets its
image's token.
"""

from __future__ import annotations

import torch
from torch import nn

from segsam.models.sawd import MLP, TokenImageBlock, TokenSelfAttention

__all__ = ["TextToVisionEnhancement"]


class TextToVisionEnhancement(nn.Module):
    """Turns class text embeddings and an image embedding into one prompt token.

    Args:
        text_dim (int): d_text, the width of the text embeddings (any).
        embed_dim (int): Decoder width D (256 for SAM).
        num_heads (int): Attention heads.
        mlp_dim (int): Hidden width of the cross-attention block's MLP.

    Raises:
        ValueError: If a width is not positive or the heads do not divide it.
    """

    def __init__(self, text_dim: int, embed_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        if text_dim < 1:
            raise ValueError(f"text_dim must be positive, got {text_dim}")
        if embed_dim < 2 or embed_dim % 2 or (embed_dim // 2) % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide half of embed_dim {embed_dim}")
        self.text_dim = text_dim
        self.embed_dim = embed_dim
        self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.summary_token = nn.Embedding(1, embed_dim)
        self.self_attn = TokenSelfAttention(embed_dim, num_heads)
        self.cross = TokenImageBlock(embed_dim, num_heads, mlp_dim, self_attention=False)
        self.out_mlp = MLP(embed_dim, embed_dim, embed_dim, 2)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Computes the enhanced text token for each image embedding.

        The token does not depend on the prompts: callers pass each image once
        and give the token to every prompt of that image.

        Args:
            image_embeddings (torch.Tensor): B x D x h x w.
            image_pe (torch.Tensor): 1 x D x h x w dense positional encoding.
            text (torch.Tensor): C x d_text class text embeddings E_t.

        Returns:
            torch.Tensor: B x 1 x D, the token to append to the prompt tokens.

        Raises:
            ValueError: If ``text`` is not C x d_text or the image is not B x D x h x w.
        """
        if text.ndim != 2 or text.shape[0] < 1 or text.shape[1] != self.text_dim:
            raise ValueError(f"expected text embeddings C x {self.text_dim}, got {tuple(text.shape)}")
        if image_embeddings.ndim != 4 or image_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"expected image embeddings B x {self.embed_dim} x h x w, got {tuple(image_embeddings.shape)}"
            )
        num = image_embeddings.shape[0]
        text_tokens = self.text_proj(text.to(self.summary_token.weight))  # C x D
        tokens = torch.cat([self.summary_token.weight, text_tokens], dim=0).unsqueeze(0)  # 1 x (C+1) x D
        tokens = self.self_attn(tokens)
        image = image_embeddings.flatten(2).transpose(1, 2)  # B x hw x D
        pos = image_pe.flatten(2).transpose(1, 2)
        tokens = self.cross(tokens.expand(num, -1, -1), tokens, image, pos)
        return self.out_mlp(tokens[:, :1, :])
