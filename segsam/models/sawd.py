"""SAWD: the semantic-aware decoder of SEG-SAM (docs/methods.md#sawd, paper §3.2.1).

An independent second decoder next to SAM's own (SAGD). Two branches:

* **prompted**: a learnable SO-token is concatenated with the prompt tokens
  P; one self-attention layer mixes them; a SAM-style two-way transformer
  (its own weights) lets tokens and the image embedding F attend to each
  other. The refined SO-token gives the prompted object's mask (hypernetwork
  MLP dotted with the upscaled F, as in SAM) and its class logits.
* **unprompted**: C learnable CO-tokens (one per class) attend to each other
  and then to F, without any prompt token. Token k goes through its own
  linear head to one logit, "class k is present among the objects that were
  not prompted" (the C heads are one C x D weight, applied with an einsum).

When both branches are on, the C presence logits go through an MLP and are
added to the SO-token before its mask and class heads (the classification
prior).

Variant ``semantic_unprompted`` (``sawd_sem``): the unprompted branch segments
instead of classifying. Each CO-token gives a full-image mask of its class
through a shared hypernetwork MLP dotted with its own upscaling of F; the
prior then reads the per-class maximum of those mask logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segsam.models.sam_compat import LayerNorm2d, TwoWayAttention

__all__ = ["MLP", "TokenSelfAttention", "TokenImageBlock", "SawdOutput", "SemanticAwareDecoder"]


class MLP(nn.Module):
    """A plain MLP: ``num_layers`` linear layers with ReLU between them.

    Args:
        input_dim (int): Input width.
        hidden_dim (int): Width of the hidden layers.
        output_dim (int): Output width.
        num_layers (int): Number of linear layers (>= 1).

    Raises:
        ValueError: If a width or ``num_layers`` is not positive.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        if min(input_dim, hidden_dim, output_dim, num_layers) < 1:
            raise ValueError(
                f"MLP widths and depth must be positive, got {input_dim}, {hidden_dim}, {output_dim}, {num_layers}"
            )
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (torch.Tensor): ... x input_dim. Returns: torch.Tensor: ... x output_dim."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class TokenSelfAttention(nn.Module):
    """Post-norm self-attention over a set of tokens: ``norm(x + attn(x + pe, x + pe, x))``.

    Args:
        dim (int): Token width D.
        num_heads (int): Attention heads (must divide ``dim``).

    Raises:
        ValueError: If ``num_heads`` does not divide ``dim``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the token width {dim}")
        self.attn = TwoWayAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, token_pe: torch.Tensor | None = None) -> torch.Tensor:
        """Mixes the tokens.

        Args:
            tokens (torch.Tensor): B x T x D.
            token_pe (torch.Tensor | None): B x T x D (or broadcastable)
              added to queries and keys.

        Returns:
            torch.Tensor: B x T x D.
        """
        q = tokens if token_pe is None else tokens + token_pe
        return self.norm(tokens + self.attn(q=q, k=q, v=tokens))


class TokenImageBlock(nn.Module):
    """Tokens attend to themselves (optional), then to the image, then an MLP.

    SAM's conventions: post-norm residual layers; the token-to-image
    attention works at half width (``downsample_rate=2``); queries carry the
    tokens' original embedding as positional encoding and keys carry the
    image's dense positional encoding. The image is not updated.

    Args:
        dim (int): Token and image channel width D.
        num_heads (int): Attention heads.
        mlp_dim (int): Hidden width of the MLP.
        self_attention (bool): Start with a self-attention layer.

    Raises:
        ValueError: If ``num_heads`` does not divide ``dim`` (or ``dim / 2``)
          or ``mlp_dim`` is not positive.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, self_attention: bool = True) -> None:
        super().__init__()
        if dim < 2 or num_heads < 1 or (dim // 2) % num_heads or dim % 2:
            raise ValueError(f"num_heads {num_heads} must divide half the token width {dim}")
        if mlp_dim < 1:
            raise ValueError(f"mlp_dim must be positive, got {mlp_dim}")
        self.self_attn = TokenSelfAttention(dim, num_heads) if self_attention else None
        self.cross_attn = TwoWayAttention(dim, num_heads, downsample_rate=2)
        self.norm_cross = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norm_mlp = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, token_pe: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
    ) -> torch.Tensor:
        """Refines tokens against an image.

        Args:
            tokens (torch.Tensor): B x T x D.
            token_pe (torch.Tensor): B x T x D (or broadcastable), e.g. the
              tokens' initial embedding.
            image (torch.Tensor): B x HW x D flattened image embedding.
            image_pe (torch.Tensor): B x HW x D (or 1 x HW x D).

        Returns:
            torch.Tensor: B x T x D.
        """
        if self.self_attn is not None:
            tokens = self.self_attn(tokens, token_pe)
        attended = self.cross_attn(q=tokens + token_pe, k=image + image_pe, v=image)
        tokens = self.norm_cross(tokens + attended)
        return self.norm_mlp(tokens + self.mlp(tokens))


def _upscaler(dim: int) -> nn.Sequential:
    """SAM's 4x output upscaling: D -> D/4 -> D/8 channels."""
    return nn.Sequential(
        nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
        LayerNorm2d(dim // 4),
        nn.GELU(),
        nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        nn.GELU(),
    )


@dataclass
class SawdOutput:
    """What SAWD predicts for N prompts (fields of switched-off parts are None).

    :meth:`SemanticAwareDecoder.unprompted_branch` fills the unprompted fields
    with one row per image (B) instead of one per prompt.

    Attributes:
        mask: N x 1 x 4h x 4w mask logits of the prompted object (prompted branch).
        class_logits: N x C class logits of the prompted object (prompted branch).
        presence_logits: N x C logits "class k among the unprompted objects"
            (unprompted branch, classification variant).
        class_masks: N x C x 4h x 4w full-image mask logits per class
            (``semantic_unprompted`` variant).
    """

    mask: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None
    presence_logits: torch.Tensor | None = None
    class_masks: torch.Tensor | None = None


class SemanticAwareDecoder(nn.Module):
    """SEG-SAM's semantic-aware decoder (SAWD).

    Args:
        num_classes (int): C, the size of the global vocabulary.
        transformer (nn.Module | None): Two-way transformer of the prompted
          branch (SAM's ``TwoWayTransformer``; its own weights). Required
          when ``prompted``.
        transformer_dim (int): Token and embedding width D (256 for SAM).
        prompted (bool): Build the prompted branch (SO-token).
        unprompted (bool): Build the unprompted branch (CO-tokens).
        semantic_unprompted (bool): The unprompted branch segments every
          class instead of classifying (``sawd_sem``); needs ``unprompted``.
        num_heads (int): Attention heads of the token layers.
        mlp_dim (int): MLP width of the CO-token blocks.
        unprompted_depth (int): Number of CO-token blocks (self-attention +
          cross-attention to F + MLP each).

    Raises:
        ValueError: On a non-positive size, no branch at all, a missing or
          mismatched transformer, or ``semantic_unprompted`` without
          ``unprompted``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        transformer: nn.Module | None,
        transformer_dim: int = 256,
        prompted: bool = True,
        unprompted: bool = True,
        semantic_unprompted: bool = False,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        unprompted_depth: int = 1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if transformer_dim < 8 or transformer_dim % 8:
            raise ValueError(f"transformer_dim must be a positive multiple of 8, got {transformer_dim}")
        if not (prompted or unprompted):
            raise ValueError("SAWD needs the prompted branch, the unprompted branch or both")
        if semantic_unprompted and not unprompted:
            raise ValueError("semantic_unprompted changes the unprompted branch: set unprompted=True")
        if prompted and transformer is None:
            raise ValueError("the prompted branch needs a two-way transformer")
        if prompted and getattr(transformer, "embedding_dim", transformer_dim) != transformer_dim:
            raise ValueError(
                f"transformer width {transformer.embedding_dim} differs from transformer_dim {transformer_dim}"
            )
        if unprompted_depth < 1:
            raise ValueError(f"unprompted_depth must be positive, got {unprompted_depth}")
        self.num_classes = num_classes
        self.transformer_dim = transformer_dim
        self.prompted = prompted
        self.unprompted = unprompted
        self.semantic_unprompted = semantic_unprompted
        hyper_dim = transformer_dim // 8

        if prompted:
            self.so_token = nn.Embedding(1, transformer_dim)
            self.token_self_attn = TokenSelfAttention(transformer_dim, num_heads)
            self.transformer = transformer
            self.output_upscaling = _upscaler(transformer_dim)
            self.mask_hypernet = MLP(transformer_dim, transformer_dim, hyper_dim, 3)
            self.class_head = MLP(transformer_dim, transformer_dim, num_classes, 2)
        if unprompted:
            self.co_tokens = nn.Embedding(num_classes, transformer_dim)
            self.co_blocks = nn.ModuleList(
                TokenImageBlock(transformer_dim, num_heads, mlp_dim) for _ in range(unprompted_depth)
            )
            if semantic_unprompted:
                self.class_upscaling = _upscaler(transformer_dim)
                self.class_hypernet = MLP(transformer_dim, transformer_dim, hyper_dim, 3)
            else:
                self.presence_weight = nn.Parameter(torch.empty(num_classes, transformer_dim))
                self.presence_bias = nn.Parameter(torch.zeros(num_classes))
                nn.init.normal_(self.presence_weight, std=transformer_dim**-0.5)
        if prompted and unprompted:
            self.prior_mlp = MLP(num_classes, transformer_dim, transformer_dim, 2)

    def _unprompted(
        self, image: torch.Tensor, image_pe: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """CO-token branch. image: B x HW x D. Returns (presence B x C, class masks B x C x 4h x 4w)."""
        batch = image.shape[0]
        co = self.co_tokens.weight.unsqueeze(0).expand(batch, -1, -1)
        tokens = co
        for block in self.co_blocks:
            tokens = block(tokens, co, image, image_pe)
        if not self.semantic_unprompted:
            return torch.einsum("ncd,cd->nc", tokens, self.presence_weight) + self.presence_bias, None
        upscaled = self.class_upscaling(image.transpose(1, 2).reshape(batch, self.transformer_dim, *grid))
        hyper = self.class_hypernet(tokens)  # N x C x D/8
        up_h, up_w = upscaled.shape[-2:]
        return None, (hyper @ upscaled.flatten(2)).view(batch, self.num_classes, up_h, up_w)

    def _check_image(self, image_embeddings: torch.Tensor) -> None:
        if image_embeddings.ndim != 4 or image_embeddings.shape[1] != self.transformer_dim:
            raise ValueError(
                f"expected image embeddings B x {self.transformer_dim} x h x w, got {tuple(image_embeddings.shape)}"
            )

    def unprompted_branch(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor) -> SawdOutput:
        """The unprompted branch alone, once per image: it does not depend on the prompts.

        Its output can be passed to :meth:`forward` (``unprompted``) for
        every batch of prompts of these images, so that images whose prompts
        are decoded in several batches run the branch once.

        Args:
            image_embeddings (torch.Tensor): B x D x h x w.
            image_pe (torch.Tensor): 1 x D x h x w dense positional encoding.

        Returns:
            SawdOutput: Presence logits B x C, or class masks B x C x 4h x 4w
              (``semantic_unprompted``); the prompted fields are None.

        Raises:
            ValueError: If SAWD has no unprompted branch or the embeddings
              are not B x D x h x w.
        """
        if not self.unprompted:
            raise ValueError("this SAWD was built without its unprompted branch")
        self._check_image(image_embeddings)
        images, _, height, width = image_embeddings.shape
        pos = image_pe.expand(images, -1, -1, -1)
        presence, class_masks = self._unprompted(
            image_embeddings.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), (height, width)
        )
        return SawdOutput(presence_logits=presence, class_masks=class_masks)

    def _prompt_images(
        self, image_embeddings: torch.Tensor, num: int, image_index: torch.Tensor | None
    ) -> torch.Tensor:
        """N long: the image each of ``num`` prompts decodes (``image_index``, checked, or the default)."""
        images = image_embeddings.shape[0]
        if image_index is not None:
            if tuple(image_index.shape) != (num,):
                raise ValueError(f"expected an image index of {num} prompts, got shape {tuple(image_index.shape)}")
            return image_index
        if images not in (1, num):
            raise ValueError(f"got {images} image embeddings for {num} prompts")
        if images == num:
            return torch.arange(num, device=image_embeddings.device)
        return torch.zeros(num, dtype=torch.int64, device=image_embeddings.device)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_index: torch.Tensor | None = None,
        unprompted: SawdOutput | None = None,
    ) -> SawdOutput:
        """Decodes N prompts.

        The unprompted branch does not depend on the prompts, so it runs once
        per image (or not at all when ``unprompted`` brings its output) and
        its outputs are shared by that image's prompts.

        Args:
            image_embeddings (torch.Tensor): B x D x h x w. Without
              ``image_index``, B is N (one per prompt) or 1 (shared by all).
            image_pe (torch.Tensor): 1 x D x h x w dense positional encoding.
            sparse_prompt_embeddings (torch.Tensor): N x T x D prompt tokens P.
            dense_prompt_embeddings (torch.Tensor): N x D x h x w, added to F
              in the prompted branch (as SAM does).
            image_index (torch.Tensor | None): N long: prompt i decodes image
              ``image_index[i]`` of ``image_embeddings``.
            unprompted (SawdOutput | None): :meth:`unprompted_branch` of
              these B images, or None to compute it here.

        Returns:
            SawdOutput: Mask N x 1 x 4h x 4w and class logits N x C (prompted
              branch), presence logits N x C or class masks N x C x 4h x 4w
              (unprompted branch).

        Raises:
            ValueError: If the shapes disagree.
        """
        if sparse_prompt_embeddings.ndim != 3 or sparse_prompt_embeddings.shape[-1] != self.transformer_dim:
            raise ValueError(
                f"expected prompt tokens N x T x {self.transformer_dim}, got {tuple(sparse_prompt_embeddings.shape)}"
            )
        num = sparse_prompt_embeddings.shape[0]
        self._check_image(image_embeddings)
        images, _, height, width = image_embeddings.shape
        given_index = image_index is not None
        image_index = self._prompt_images(image_embeddings, num, image_index)
        embeddings = image_embeddings[image_index] if given_index else image_embeddings.expand(num, -1, -1, -1)
        out = SawdOutput()

        prior_input = None
        if self.unprompted:
            per_image = self.unprompted_branch(image_embeddings, image_pe) if unprompted is None else unprompted
            presence, class_masks = per_image.presence_logits, per_image.class_masks
            if (presence if presence is not None else class_masks).shape[0] != images:
                raise ValueError(f"the unprompted branch's output is not one per image ({images} images)")
            out.presence_logits = None if presence is None else presence[image_index]
            out.class_masks = None if class_masks is None else class_masks[image_index]
            prior_input = (presence if presence is not None else class_masks.amax(dim=(-2, -1)))[image_index]

        if self.prompted:
            so = self.so_token.weight.unsqueeze(0).expand(num, -1, -1)
            tokens = torch.cat([so, sparse_prompt_embeddings], dim=1)
            tokens = self.token_self_attn(tokens)
            hs, src = self.transformer(embeddings + dense_prompt_embeddings, image_pe.expand(num, -1, -1, -1), tokens)
            so_out = hs[:, 0, :]
            if prior_input is not None:
                so_out = so_out + self.prior_mlp(prior_input)
            upscaled = self.output_upscaling(src.transpose(1, 2).reshape(num, self.transformer_dim, height, width))
            up_h, up_w = upscaled.shape[-2:]
            hyper = self.mask_hypernet(so_out).unsqueeze(1)  # N x 1 x D/8
            out.mask = (hyper @ upscaled.flatten(2)).view(num, 1, up_h, up_w)
            out.class_logits = self.class_head(so_out)
        return out
