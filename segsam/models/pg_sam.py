"""PG-SAM: prior-guided, prompt-free SAM for multi-organ segmentation (the second seed paper).

:class:`PGSam` segments every class of an image at once, with no user prompt:

1. the image embedding F: from the embedding cache (frozen LiteMedSAM
   TinyViT, B x 256 x 64 x 64) or from the model's own encoder run inside the
   forward pass (SAM ViT-B at 256 with LoRA on attention q and v,
   B x 256 x 16 x 16; its intermediate blocks are kept as levels);
2. the prior aligner (FGMPA, :mod:`segsam.models.prior_aligner`) aligns one
   text prior per class with F and makes sparse and dense prompts of them;
3. the multi-level fusion (MLFF, :mod:`segsam.models.level_fusion`), when on,
   fuses the encoder's intermediate levels (ViT-B) or levels derived from the
   cached embedding (TinyViT, :mod:`segsam.models.level_pyramid`);
4. the decoder (:mod:`segsam.models.pg_decoder`) decodes C + 1 class masks;
   with K > 1 rounds the iterative mask optimiser (IMO,
   :mod:`segsam.models.mask_optimiser`) feeds each round's masks back as
   prompts of the next.

The output is :class:`~segsam.models.segsam_net.ModelOutput` with ``semantic``
= B x (C + 1) x 256 x 256 logits, like the prompt-free networks', so training
(:class:`~segsam.models.losses.PromptFreeLoss`) and scoring
(:func:`segsam.evaluate.run.prompt_free_rows`) are theirs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.level_fusion import MultiLevelFusion
from segsam.models.mask_optimiser import IterativeMaskOptimiser
from segsam.models.pg_decoder import PriorGuidedDecoder
from segsam.models.prior_aligner import PriorAligner
from segsam.models.segsam_net import ModelOutput
from segsam.models.vit import encode_with_levels

__all__ = ["PGSam"]


class PGSam(nn.Module):
    """PG-SAM's model: optional image encoder, prior aligner, fusion, decoder and mask optimiser.

    Args:
        num_classes (int): C, the vocabulary size.
        prior_aligner (PriorAligner): FGMPA, with or without text priors.
        semantic_decoder (PriorGuidedDecoder): The C + 1 class decoder.
        level_fusion (MultiLevelFusion | None): MLFF, or None (switched off).
        mask_optimiser (IterativeMaskOptimiser | None): IMO; required exactly when ``rounds`` > 1.
        rounds (int): K, decoding rounds.
        image_encoder (nn.Module | None): B x 3 x S x S -> B x D x h x w;
          None when the embeddings come from the cache.
        encoder_taps (tuple[int, ...]): Blocks of a SAM ViT ``image_encoder``
          whose outputs are the fusion's levels (:func:`segsam.models.vit.level_taps`);
          empty when the fusion derives its levels from the embedding.
        image_size (int): S, the model-frame side (256).

    Raises:
        ValueError: If the parts do not fit together (class counts, rounds
          without the optimiser, taps without an encoder or a fusion that reads them).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        prior_aligner: PriorAligner,
        semantic_decoder: PriorGuidedDecoder,
        level_fusion: MultiLevelFusion | None = None,
        mask_optimiser: IterativeMaskOptimiser | None = None,
        rounds: int = 1,
        image_encoder: nn.Module | None = None,
        encoder_taps: tuple[int, ...] = (),
        image_size: int = 256,
    ) -> None:
        super().__init__()
        counts = {prior_aligner.num_classes, semantic_decoder.num_classes}
        if mask_optimiser is not None:
            counts.add(mask_optimiser.num_classes)
        if num_classes < 1 or counts != {num_classes}:
            raise ValueError(f"every part must have the model's {num_classes} classes, got {sorted(counts)}")
        if rounds < 1 or (rounds > 1) != (mask_optimiser is not None):
            raise ValueError(f"rounds={rounds}: more than one round needs the mask optimiser, one round none")
        if encoder_taps and (image_encoder is None or level_fusion is None or level_fusion.pyramid is not None):
            raise ValueError("encoder taps need the image encoder and a fusion that reads the encoder's levels")
        if level_fusion is not None and level_fusion.pyramid is None and not encoder_taps:
            raise ValueError("a fusion without its own pyramid reads the encoder's levels: give encoder_taps")
        self.num_classes = num_classes
        self.rounds = rounds
        self.image_size = image_size
        self.encoder_taps = tuple(encoder_taps)
        self.image_encoder = image_encoder
        self.prior_aligner = prior_aligner
        self.level_fusion = level_fusion
        self.semantic_decoder = semantic_decoder
        self.mask_optimiser = mask_optimiser

    def train(self, mode: bool = True) -> PGSam:
        """Sets training mode, but keeps a fully frozen image encoder in eval mode (TinyViT has batch norm)."""
        super().train(mode)
        encoder = self.image_encoder
        if mode and encoder is not None and not any(p.requires_grad for p in encoder.parameters()):
            encoder.eval()
        return self

    @property
    def embedding_size(self) -> tuple[int, int]:
        """(h, w) of the image embedding the decoder expects."""
        side = self.semantic_decoder.embedding_size
        return side, side

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Embeds images with the model's encoder.

        Args:
            images (torch.Tensor): B x 3 x S x S (:func:`segsam.models.preprocess.encoder_input`).

        Returns:
            torch.Tensor: B x D x h x w embeddings.
            list[torch.Tensor] | None: The encoder's levels (taps), or None without taps.

        Raises:
            ValueError: If the model has no encoder or the images are not B x 3 x S x S.
        """
        if self.image_encoder is None:
            raise ValueError("this model was built without its image encoder (embeddings come from the cache)")
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"expected images B x 3 x {self.image_size} x {self.image_size}, got {tuple(images.shape)}"
            )
        if self.encoder_taps:
            return encode_with_levels(self.image_encoder, images, self.encoder_taps)
        return self.image_encoder(images), None

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        if tuple(logits.shape[-2:]) == (self.image_size, self.image_size):
            return logits
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def forward(self, inputs: torch.Tensor, text: torch.Tensor | None = None) -> ModelOutput:
        """Segments every class of B images.

        Args:
            inputs (torch.Tensor): B x D x h x w cached embeddings, or B x 3 x S x S
              images that go through the model's encoder (required with encoder taps).
            text (torch.Tensor | None): C x d_text class text embeddings (required with text priors).

        Returns:
            ModelOutput: ``semantic`` = B x (C + 1) x S x S logits of the last
              round; in training mode ``semantic_rounds`` holds the earlier
              rounds' (K > 1). The prompted fields are None.

        Raises:
            ValueError: If the inputs do not fit, or text priors lack the text.
        """
        levels = None
        if inputs.ndim == 4 and inputs.shape[1] == 3:
            embeddings, levels = self.encode(inputs)
        elif self.encoder_taps:
            raise ValueError("this model fuses its encoder's levels: pass images (B x 3 x S x S), not embeddings")
        else:
            embeddings = inputs
        image_pe = self.semantic_decoder.dense_pe()
        priors = self.prior_aligner(embeddings, image_pe, text)
        fused = None if self.level_fusion is None else self.level_fusion(embeddings, levels)
        dense, update = priors.dense, None
        rounds = []
        for index in range(self.rounds):
            logits = self.semantic_decoder(embeddings, image_pe, priors.sparse, dense, update, fused)
            rounds.append(logits)
            if index + 1 < self.rounds:
                feedback = self.mask_optimiser(logits, embeddings)
                dense, update = priors.dense + feedback.dense, feedback.tokens
        earlier = None
        if self.training and len(rounds) > 1:
            earlier = torch.stack([self._upsample(r) for r in rounds[:-1]], dim=1)
        return ModelOutput(masks=None, iou=None, semantic=self._upsample(rounds[-1]), semantic_rounds=earlier)
