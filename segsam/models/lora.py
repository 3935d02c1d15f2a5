"""LoRA on the query and value projections of SAM's ViT attention (the ``lora_qv`` adapter).

SAM's ViT attention computes queries, keys and values with one linear layer,
``attn.qkv`` (C -> 3C, in that order). :class:`LoRAQueryValue` takes its
place: it keeps the pretrained weight and bias under the same names (so
``blocks.<i>.attn.qkv.weight`` loads unchanged from SAM's checkpoint) and adds
two low-rank updates, ``up(down(x))`` of rank r, to the query and value parts;
keys are left alone. As for the other adapters (:mod:`segsam.models.adapters`),
the new sub-modules' names start with ``adapter``, so
:func:`~segsam.models.adapters.is_adapter_parameter` finds exactly the LoRA
parameters, they may be missing from a checkpoint, and they are what trains.

The up projections start with small weights (std 1e-3) rather than zeros:
the encoder starts within a rounding of the pretrained one while every LoRA
parameter receives a gradient from the first step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.sam_compat import ImageEncoderViT

__all__ = ["LORA_RANK", "LoRAQueryValue", "add_lora"]

#: Rank of the LoRA updates (PG-SAM's public code uses 4).
LORA_RANK = 4
_UP_INIT_STD = 1e-3


class LoRAQueryValue(nn.Module):
    """SAM's fused ``qkv`` projection with low-rank updates of its query and value parts.

    Args:
        qkv (nn.Linear): The attention's C -> 3C projection (pretrained or not);
          its weight and bias are taken over, not copied.
        rank (int): r, the rank of each update.

    Raises:
        ValueError: If ``qkv`` is not a C -> 3C linear layer or the rank is not in [1, C].
    """

    def __init__(self, qkv: nn.Linear, rank: int = LORA_RANK) -> None:
        super().__init__()
        if not isinstance(qkv, nn.Linear) or qkv.out_features != 3 * qkv.in_features:
            raise ValueError(f"expected the attention's C -> 3C qkv projection, got {qkv}")
        dim = qkv.in_features
        if not 1 <= rank <= dim:
            raise ValueError(f"LoRA rank must lie in [1, {dim}], got {rank}")
        self.dim = dim
        self.rank = rank
        self.weight = qkv.weight
        self.bias = qkv.bias
        self.adapter_q_down = nn.Linear(dim, rank, bias=False)
        self.adapter_q_up = nn.Linear(rank, dim, bias=False)
        self.adapter_v_down = nn.Linear(dim, rank, bias=False)
        self.adapter_v_up = nn.Linear(rank, dim, bias=False)
        for up in (self.adapter_q_up, self.adapter_v_up):
            nn.init.normal_(up.weight, std=_UP_INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (torch.Tensor): ... x C. Returns: torch.Tensor: ... x 3C, queries, keys, values."""
        q, k, v = F.linear(x, self.weight, self.bias).split(self.dim, dim=-1)
        q = q + self.adapter_q_up(self.adapter_q_down(x))
        v = v + self.adapter_v_up(self.adapter_v_down(x))
        return torch.cat([q, k, v], dim=-1)


def add_lora(encoder: ImageEncoderViT, rank: int = LORA_RANK) -> ImageEncoderViT:
    """Replaces the ``attn.qkv`` projection of every block of a SAM ViT by :class:`LoRAQueryValue` (in place).

    Args:
        encoder (ImageEncoderViT): SAM ViT encoder (pretrained or not).
        rank (int): Rank of the updates.

    Returns:
        ImageEncoderViT: ``encoder`` itself.

    Raises:
        ValueError: If the encoder already has LoRA or its blocks have no ``attn.qkv``.
    """
    for index, block in enumerate(encoder.blocks):
        qkv = getattr(getattr(block, "attn", None), "qkv", None)
        if isinstance(qkv, LoRAQueryValue):
            raise ValueError("the encoder already has LoRA")
        if qkv is None:
            raise ValueError(f"block {index} of the encoder has no attn.qkv projection")
        block.attn.qkv = LoRAQueryValue(qkv, rank)
    return encoder
