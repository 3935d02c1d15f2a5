"""A randomly initialised SAM ViT-B in the official checkpoint layout, standing in for ``sam_vit_b_01ec64.pth``.

SAM's released ViT-B weights are not reachable without network. This file has the same keys and
shapes (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``, 375 MB), so the ViT-B
methods can be run through every stage to check the plumbing; its numbers mean nothing.

    segsam random-vit-b /tmp/mirror/sam_vit_b_01ec64.pth   # prints the file's sha256
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from segsam.atomic import atomic_path
from segsam.hashing import sha256_of
from segsam.models.sam_compat import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


def official_sam(depth: int = 12, global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)) -> Sam:
    """A random SAM ViT-B at 1024, built the way ``segment_anything.build_sam_vit_b`` builds it, in eval mode.

    Position tensors that SAM zero-initialises are drawn at random (std 0.02), so that resizing
    them to 256 matters. Seed torch first for fixed values.

    Args:
        depth: Transformer blocks of the image encoder (12 in ViT-B; fewer keep tests fast, and
            the keys stay those of the official checkpoint, ``image_encoder.blocks.<i>.*``).
        global_attn_indexes: Blocks with global attention (the others use 14 x 14 windows).

    Returns:
        The model (``image_encoder``, ``prompt_encoder``, ``mask_decoder``).
    """
    # spelled out from segment_anything's builder, not through segsam.models.vit.build_sam_vit:
    # tests/models/test_vit.py checks build_sam_vit and the weight loading against this model
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=768,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=12,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn_indexes,
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    with torch.no_grad():
        sam.image_encoder.pos_embed.normal_(std=0.02)
        for block in sam.image_encoder.blocks:
            block.attn.rel_pos_h.normal_(std=0.02)
            block.attn.rel_pos_w.normal_(std=0.02)
    return sam.eval()


def write_random_sam_vit_b(path: str | Path, seed: int = 0) -> str:
    """Writes a random full SAM ViT-B (:func:`official_sam`) as a state dict, atomically.

    Args:
        path: Destination file (its folder is created).
        seed: torch seed; the same seed gives the same bytes, wherever the file is written.

    Returns:
        The file's sha256 (set it as ``encoder.vit_b.sha256``).
    """
    torch.manual_seed(seed)
    sam = official_sam()
    # through a file object: torch.save names the archive after a path it is given, and the
    # temporary path is random, so the bytes (and the sha256) would change from run to run
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        torch.save(sam.state_dict(), stream)
    return sha256_of(path)
