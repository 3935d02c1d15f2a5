"""The assembled model shared by every method: :class:`PromptableModel`.

Sub-modules (a method's :class:`~segsam.methods.MethodSpec` says which
exist and which train):

* ``image_encoder``: TinyViT (LiteMedSAM) or SAM ViT (optionally with
  adapters); may be None when embeddings come from the cache.
* ``prompt_encoder``: SAM's prompt encoder.
* ``mask_decoder``: SAGD, SAM's mask decoder unchanged
  (:class:`~segsam.models.litemedsam.PairedMaskDecoder`).
* ``sawd``: :class:`~segsam.models.sawd.SemanticAwareDecoder` or None.
* ``t2vse``: :class:`~segsam.models.t2vse.TextToVisionEnhancement` or None.
* ``semantic_net``: a prompt-free U-Net / UNETR (then all of the above are None).

Prompts. SAM's prompt encoder makes two sparse tokens for one box (its two
corners) and also for one point (the point plus the padding point it adds
when there is no box). A batch mixing box and point prompts is therefore
encoded as two sub-batches and scattered back into prompt order, giving
N x 2 x D tokens. The T2VSE token (N x 1 x D) is appended for SAGD (and for
SAWD in variant ``t2vse_v1``).

Images and prompts. T2VSE's token and SAWD's unprompted branch depend on the
image only: with ``image_index`` they run once per image of the batch, and
:meth:`PromptableModel.image_context` computes them once for prompts decoded
in several passes (evaluation bounds its memory that way); the passes then
give what one pass would.

Resolution. The decoders upscale the embedding 4x: 64 x 64 -> 256 x 256 for
TinyViT; 16 x 16 -> 64 x 64 for ViT-B at 256, which is then resized
bilinearly to 256 x 256 (as SAM-Med2D does). Every per-prompt mask in
:class:`ModelOutput` is 256 x 256; ``class_masks`` (``sawd_sem``) stay at the
decoder's resolution to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from segsam.models.litemedsam import PairedMaskDecoder
from segsam.models.sam_compat import PromptEncoder
from segsam.models.sawd import SawdOutput, SemanticAwareDecoder
from segsam.models.t2vse import TextToVisionEnhancement

__all__ = ["ImageContext", "ModelOutput", "Prompts", "PromptableModel"]


@dataclass
class ModelOutput:
    """Predictions for N prompts (or B images for a prompt-free network).

    Attributes:
        masks: N x 1 x 256 x 256 SAGD mask logits (binary task); None for
            prompt-free networks.
        iou: N x 1 SAGD IoU predictions; None for prompt-free networks.
        sem_masks: N x 1 x 256 x 256 SAWD mask logits of the prompted object
            (semantic task; its class is ``class_logits.argmax(1)``).
        class_logits: N x C class logits of the prompted object (SAWD).
        presence_logits: N x C logits "class k is among the image's objects
            that were not prompted" (SAWD unprompted branch).
        class_masks: N x C x h x w full-image per-class mask logits
            (``sawd_sem`` only; h x w is the decoder's resolution).
        semantic: B x (C + 1) x 256 x 256 logits of a prompt-free network
            or PG-SAM (channel 0 = background, k + 1 = class k).
        semantic_rounds: B x (K - 1) x (C + 1) x 256 x 256 logits of PG-SAM's
            decoding rounds before the last (its mask optimiser, K > 1), in
            training mode only: the loss averages over all K rounds.
    """

    masks: torch.Tensor | None
    iou: torch.Tensor | None
    sem_masks: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None
    presence_logits: torch.Tensor | None = None
    class_masks: torch.Tensor | None = None
    semantic: torch.Tensor | None = None
    semantic_rounds: torch.Tensor | None = None

    @classmethod
    def concatenate(cls, parts: list[ModelOutput]) -> ModelOutput:
        """Join the outputs of consecutive prompt (or image) batches along the first dimension.

        Args:
            parts: Outputs of the same model, in order; at least one.

        Returns:
            ModelOutput: One output; a field is None where it is None in the parts.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        fields = {}
        for name in cls.__dataclass_fields__:
            values = [getattr(part, name) for part in parts]
            fields[name] = None if values[0] is None else torch.cat(values)
        return cls(**fields)


def _as_tensor(value: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(
            np.require(value, requirements=["C", "W"])
        )  # copies read-only views (pandas .to_numpy())
    return torch.as_tensor(value, dtype=dtype, device=device)


def _as_clicks(clicks: tuple[Any, Any], num: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrective clicks as (N x P x 2 float32, N x P long) tensors; raises ValueError on other shapes."""
    coords, labels = _as_tensor(clicks[0], torch.float32, device), _as_tensor(clicks[1], torch.int64, device)
    if coords.ndim != 3 or tuple(coords.shape[::2]) != (num, 2) or tuple(labels.shape) != tuple(coords.shape[:2]):
        raise ValueError(
            f"expected clicks N x P x 2 and N x P labels with N = {num}, "
            f"got {tuple(coords.shape)} and {tuple(labels.shape)}"
        )
    return coords, labels


@dataclass(frozen=True)
class Prompts:
    """N prompts in the model frame, as tensors on the model's device.

    Attributes:
        is_point: N bool, True for a point prompt, else a box.
        boxes: N x 4 float32 (x0, y0, x1, y1), used where ``~is_point``.
        points: N x 2 float32 (x, y) foreground points, used where ``is_point``.
        image_index: N long, the image each prompt decodes; None: prompt i
            decodes embedding i.
        clicks: Corrective clicks added to each prompt, N x P x 2 float32
            (x, y) and N x P long labels (1 positive, 0 negative, -1 none); or None.
    """

    is_point: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    image_index: torch.Tensor | None = None
    clicks: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.is_point.shape[0])

    @classmethod
    def coerce(
        cls,
        is_point: Any,
        boxes: Any,
        points: Any,
        *,
        images: int,
        device: torch.device,
        image_index: Any = None,
        clicks: tuple[Any, Any] | None = None,
    ) -> Prompts:
        """Checked prompts from tensors or numpy arrays (read-only arrays are copied).

        Args:
            is_point: N bool.
            boxes: N x 4.
            points: N x 2.
            images: B, the number of image embeddings the prompts decode.
            device: Where the tensors go (the embeddings' device).
            image_index: N ints in ``[0, B)``, or None: one embedding per
                prompt (B = N).
            clicks: N x P x 2 coordinates and N x P labels, or None.

        Returns:
            Prompts: The prompts, typed and on ``device``.

        Raises:
            ValueError: If a part is missing, there are no prompts, the shapes
                disagree, or the image index does not fit the B images.
        """
        if is_point is None or boxes is None or points is None:
            raise ValueError("a promptable model needs is_point, boxes and points (N each)")
        is_point = _as_tensor(is_point, torch.bool, device).flatten()
        boxes = _as_tensor(boxes, torch.float32, device)
        points = _as_tensor(points, torch.float32, device)
        num = is_point.shape[0]
        if num == 0:
            raise ValueError("no prompts")
        if image_index is None:
            if images != num:
                raise ValueError(f"got {images} embeddings for {num} prompts (one per prompt)")
        else:
            image_index = _as_tensor(image_index, torch.int64, device).flatten()
            if image_index.shape[0] != num:
                raise ValueError(f"got an image index of {image_index.shape[0]} for {num} prompts")
            if int(image_index.min()) < 0 or int(image_index.max()) >= images:
                raise ValueError(f"image index outside [0, {images}): one entry per image is expected")
        if tuple(boxes.shape) != (num, 4) or tuple(points.shape) != (num, 2):
            raise ValueError(
                f"expected boxes {num} x 4 and points {num} x 2, got {tuple(boxes.shape)} and {tuple(points.shape)}"
            )
        return cls(is_point, boxes, points, image_index, None if clicks is None else _as_clicks(clicks, num, device))


@dataclass
class ImageContext:
    """What the decoders take from B images alone, shared by every prompt of those images.

    :meth:`PromptableModel.image_context` fills every field the model uses,
    so that the prompts of an image decoded in several passes reuse them.
    :meth:`PromptableModel.forward` on embeddings leaves the optional fields
    None and computes them within the pass.

    Attributes:
        embeddings: B x D x h x w image embeddings.
        image_pe: 1 x D x h x w dense positional encoding.
        t2vse_token: B x 1 x D T2VSE token per image, or None (no T2VSE, or
            computed within the pass).
        sawd_unprompted: SAWD's unprompted-branch output per image (presence
            logits B x C or class masks B x C x 4h x 4w), or None.
    """

    embeddings: torch.Tensor
    image_pe: torch.Tensor
    t2vse_token: torch.Tensor | None = None
    sawd_unprompted: SawdOutput | None = None


class PromptableModel(nn.Module):
    """SAM-family model with optional SAWD and T2VSE, or a prompt-free network.

    Args:
        num_classes (int): C, the vocabulary size.
        image_encoder (nn.Module | None): B x 3 x S x S -> B x 256 x h x w,
          or None (embeddings come from a cache; :meth:`encode` then raises).
        prompt_encoder (PromptEncoder | None): SAM prompt encoder whose
          ``image_embedding_size`` is h x w and ``input_image_size`` S x S.
        mask_decoder (PairedMaskDecoder | None): SAGD.
        sawd (SemanticAwareDecoder | None): Semantic-aware decoder.
        t2vse (TextToVisionEnhancement | None): Text-to-vision module.
        t2vse_to_sawd (bool): Also append the T2VSE token to SAWD's prompt
          tokens (variant ``t2vse_v1``).
        cmsa (bool): Train with the CMSA term (:class:`~segsam.models.losses.MethodLoss`).
        semantic_net (nn.Module | None): A prompt-free network
          (B x 3 x S x S -> B x (C+1) x S x S); excludes every other module.
        image_size (int): S, the model-frame side (256).

    Raises:
        ValueError: If the parts do not fit together (missing SAGD, sizes,
          class counts, a T2VSE/CMSA flag without its module).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        image_encoder: nn.Module | None = None,
        prompt_encoder: PromptEncoder | None = None,
        mask_decoder: PairedMaskDecoder | None = None,
        sawd: SemanticAwareDecoder | None = None,
        t2vse: TextToVisionEnhancement | None = None,
        t2vse_to_sawd: bool = False,
        cmsa: bool = False,
        semantic_net: nn.Module | None = None,
        image_size: int = 256,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if semantic_net is not None:
            parts = {
                "image_encoder": image_encoder,
                "prompt_encoder": prompt_encoder,
                "mask_decoder": mask_decoder,
                "sawd": sawd,
                "t2vse": t2vse,
            }
            others = [name for name, module in parts.items() if module is not None]
            if others or t2vse_to_sawd or cmsa:
                raise ValueError(
                    f"a prompt-free model has only semantic_net; got also {others or 't2vse_to_sawd/cmsa'}"
                )
        else:
            if prompt_encoder is None or mask_decoder is None:
                raise ValueError("a promptable model needs a prompt encoder and a mask decoder (SAGD)")
            if tuple(prompt_encoder.input_image_size) != (image_size, image_size):
                raise ValueError(
                    f"prompt encoder input size {prompt_encoder.input_image_size} is not {image_size} x {image_size}"
                )
            if sawd is not None and sawd.num_classes != num_classes:
                raise ValueError(f"SAWD has {sawd.num_classes} classes, the model {num_classes}")
            if t2vse_to_sawd and (t2vse is None or sawd is None or not sawd.prompted):
                raise ValueError("t2vse_to_sawd needs a T2VSE module and SAWD's prompted branch")
            if cmsa and (sawd is None or not sawd.prompted):
                raise ValueError("CMSA needs SAWD's prompted branch (its mask)")
        self.num_classes = num_classes
        self.image_size = image_size
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.sawd = sawd
        self.t2vse = t2vse
        self.semantic_net = semantic_net
        self.t2vse_to_sawd = t2vse_to_sawd
        self.cmsa = cmsa

    def train(self, mode: bool = True) -> PromptableModel:
        """Sets training mode, but keeps a fully frozen image encoder in eval mode.

        TinyViT has batch norm: running it in training mode would change its
        statistics even though none of its parameters train.
        """
        super().train(mode)
        encoder = self.image_encoder
        if mode and encoder is not None and not any(p.requires_grad for p in encoder.parameters()):
            encoder.eval()
        return self

    @property
    def prompt_free(self) -> bool:
        """True for a prompt-free network (U-Net, UNETR)."""
        return self.semantic_net is not None

    @property
    def embedding_size(self) -> tuple[int, int] | None:
        """(h, w) of the image embedding the decoders expect; None when prompt-free."""
        return None if self.prompt_encoder is None else tuple(self.prompt_encoder.image_embedding_size)

    @property
    def embed_dim(self) -> int | None:
        """Channel width D of the image embedding (256 for SAM); None when prompt-free."""
        return None if self.prompt_encoder is None else int(self.prompt_encoder.embed_dim)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds preprocessed images (for prompt-free networks: returns them as they are).

        Args:
            images (torch.Tensor): B x 3 x S x S from
              :func:`segsam.models.preprocess.prepare_image`.

        Returns:
            torch.Tensor: B x 256 x h x w image embeddings (prompt-free: the images).

        Raises:
            ValueError: If the images are not B x 3 x S x S, or the model was
              built without its image encoder.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"expected images B x 3 x {self.image_size} x {self.image_size}, got {tuple(images.shape)}"
            )
        if self.prompt_free:
            return images
        if self.image_encoder is None:
            raise ValueError("this model was built without its image encoder (embeddings come from the cache)")
        return self.image_encoder(images)

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        if tuple(logits.shape[-2:]) == (self.image_size, self.image_size):
            return logits
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def encode_prompts(
        self,
        is_point: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        device: torch.device,
        clicks: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings for a batch mixing boxes and single points.

        Args:
            is_point (torch.Tensor): N bool, True for a point prompt.
            boxes (torch.Tensor): N x 4 (x0, y0, x1, y1) in the model frame;
              rows of point prompts are ignored.
            points (torch.Tensor): N x 2 (x, y) foreground points; rows of
              box prompts are ignored.
            device (torch.device): Where to compute.
            clicks (tuple[torch.Tensor, torch.Tensor] | None): Corrective
              clicks added to every prompt: N x P x 2 (x, y) and N x P labels
              (1 positive, 0 negative, -1 none; see
              :mod:`segsam.train.prompts`).

        Returns:
            torch.Tensor: N x (2 + P) x D sparse tokens, in prompt order.
            torch.Tensor: N x D x h x w dense embeddings.
        """
        num = is_point.shape[0]
        box_idx = torch.nonzero(~is_point, as_tuple=False).flatten()
        point_idx = torch.nonzero(is_point, as_tuple=False).flatten()
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if box_idx.numel():
            # SAM: click tokens first, then the two box corners (no padding point next to a box)
            box_clicks = None if clicks is None else (clicks[0][box_idx], clicks[1][box_idx])
            sparse, dense = self.prompt_encoder(points=box_clicks, boxes=boxes[box_idx], masks=None)
            parts.append((box_idx, sparse, dense))
        if point_idx.numel():
            coords = points[point_idx].unsqueeze(1)
            labels = torch.ones(point_idx.numel(), 1, dtype=torch.int64, device=device)
            if clicks is not None:
                coords = torch.cat([coords, clicks[0][point_idx]], dim=1)
                labels = torch.cat([labels, clicks[1][point_idx]], dim=1)
            # SAM pads point-only prompts with one "not a point" token: 2 + P tokens, as for boxes
            sparse, dense = self.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            parts.append((point_idx, sparse, dense))
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        _, first_sparse, first_dense = parts[0]
        sparse_all = first_sparse.new_zeros((num, *first_sparse.shape[1:]))
        dense_all = first_dense.new_zeros((num, *first_dense.shape[1:]))
        for index, sparse, dense in parts:
            sparse_all = sparse_all.index_copy(0, index, sparse)
            dense_all = dense_all.index_copy(0, index, dense)
        return sparse_all, dense_all

    def _check_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        h, w = self.embedding_size
        if embeddings.ndim != 4 or tuple(embeddings.shape[1:]) != (self.embed_dim, h, w):
            raise ValueError(f"expected embeddings N x {self.embed_dim} x {h} x {w}, got {tuple(embeddings.shape)}")
        return embeddings

    def _t2vse_token(self, embeddings: torch.Tensor, image_pe: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        if text is None:
            raise ValueError("this model has T2VSE: pass the class text embeddings (C x d_text)")
        return self.t2vse(embeddings, image_pe, text)  # B x 1 x D: once per image

    def image_context(
        self, embeddings: torch.Tensor, text: torch.Tensor | None = None, *, semantic: bool = True
    ) -> ImageContext:
        """The parts of :meth:`forward` that depend on the images only, computed once.

        Pass the result to :meth:`forward` in place of the embeddings (with
        ``image_index``) to decode the images' prompts in several passes
        without running T2VSE or SAWD's unprompted branch again in each.

        Args:
            embeddings (torch.Tensor): B x 256 x h x w image embeddings
              (cached frozen-encoder output or :meth:`encode`).
            text (torch.Tensor | None): C x d_text class text embeddings;
              required when the model has T2VSE, ignored otherwise.
            semantic (bool): Also run SAWD's unprompted branch (False:
              binary-task inference, which needs only SAGD).

        Returns:
            ImageContext: Every field this model uses, one row per image.

        Raises:
            ValueError: For a prompt-free model, embeddings of the wrong
              shape, or T2VSE without text.
        """
        if self.prompt_free:
            raise ValueError("a prompt-free model has no image context: call it on the images")
        embeddings = self._check_embeddings(embeddings)
        image_pe = self.prompt_encoder.get_dense_pe()
        token = None if self.t2vse is None else self._t2vse_token(embeddings, image_pe, text)
        unprompted = None
        if semantic and self.sawd is not None and self.sawd.unprompted:
            unprompted = self.sawd.unprompted_branch(embeddings, image_pe)
        return ImageContext(embeddings, image_pe, token, unprompted)

    def forward(
        self,
        embeddings: torch.Tensor | ImageContext,
        is_point: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        *,
        semantic: bool = True,
        clicks: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_index: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Decodes one object per prompt (or segments images, prompt-free).

        Args:
            embeddings (torch.Tensor | ImageContext): N x 256 x h x w, one per
              prompt (cached frozen-encoder output or :meth:`encode`), or one
              per image with ``image_index``: B x 256 x h x w embeddings;
              B x 3 x S x S images (:func:`segsam.models.preprocess.encoder_input`)
              that go through the image encoder inside this call, so that the
              encoder trains (adapters, MedSAM) and a DDP wrapper sees it; or
              the :meth:`image_context` of B images. For a prompt-free
              network, B x 3 x S x S images.
            is_point (torch.Tensor | None): N bool: point prompt, else box.
              Ignored when prompt-free.
            boxes (torch.Tensor | None): N x 4 model-frame (x0, y0, x1, y1),
              used where ``~is_point``.
            points (torch.Tensor | None): N x 2 model-frame (x, y),
              foreground, used where ``is_point``.
            text (torch.Tensor | None): C x d_text class text embeddings;
              required when the model has T2VSE (unless the image context
              holds its token), ignored otherwise.
            semantic (bool): Run SAWD. False skips it (binary-task
              inference needs only SAGD); its fields are then None.
            clicks (tuple[torch.Tensor, torch.Tensor] | None): Corrective
              clicks added to each prompt, N x P x 2 model-frame (x, y) and
              N x P labels (1 positive, 0 negative, -1 none).
            image_index (torch.Tensor | None): N long: prompt i decodes image
              ``image_index[i]``. The parts that do not depend on the prompts
              (T2VSE's token, SAWD's unprompted branch) then run once per image.

        Prompts, clicks and the index may be numpy arrays (see :meth:`Prompts.coerce`).

        Returns:
            ModelOutput: see its fields.

        Raises:
            ValueError: If shapes disagree, prompts are missing, or T2VSE
              has no text.
        """
        if self.prompt_free:
            if embeddings.ndim != 4 or embeddings.shape[1] != 3:
                raise ValueError(f"a prompt-free model takes images B x 3 x S x S, got {tuple(embeddings.shape)}")
            return ModelOutput(masks=None, iou=None, semantic=self.semantic_net(embeddings))
        if isinstance(embeddings, ImageContext):
            context = embeddings
        else:
            if image_index is not None and embeddings.ndim == 4 and embeddings.shape[1] == 3:
                embeddings = self.encode(embeddings)
            context = ImageContext(self._check_embeddings(embeddings), self.prompt_encoder.get_dense_pe())
        per_image = context.embeddings
        prompts = Prompts.coerce(
            is_point,
            boxes,
            points,
            images=per_image.shape[0],
            device=per_image.device,
            image_index=image_index,
            clicks=clicks,
        )
        return self._decode(context, prompts, text, semantic)

    def semantic_decode(
        self,
        context: ImageContext,
        is_point: Any,
        boxes: Any,
        points: Any,
        image_index: Any,
    ) -> SawdOutput:
        """SAWD alone (no SAGD) for prompts of images whose :meth:`image_context` is given.

        For what reads SAWD only, such as the class-head refit
        (:mod:`segsam.train.head_refit`): half the cost of :meth:`forward`,
        whose SAGD pass it skips. Masks stay at the decoder's resolution.

        Args:
            context (ImageContext): :meth:`image_context` of B images (with
              its T2VSE token when the model has T2VSE).
            is_point (Any): N bool: point prompt, else box.
            boxes (Any): N x 4 model-frame (x0, y0, x1, y1), used where ``~is_point``.
            points (Any): N x 2 model-frame (x, y), used where ``is_point``.
            image_index (Any): N long: prompt i decodes image ``image_index[i]``.

        Returns:
            SawdOutput: SAWD's outputs for the N prompts.

        Raises:
            ValueError: Without SAWD, or on prompts :meth:`forward` refuses.
        """
        if self.sawd is None:
            raise ValueError("this model has no SAWD")
        prompts = Prompts.coerce(
            is_point,
            boxes,
            points,
            images=context.embeddings.shape[0],
            device=context.embeddings.device,
            image_index=image_index,
        )
        sparse, dense = self.encode_prompts(prompts.is_point, prompts.boxes, prompts.points, context.embeddings.device)
        if self.t2vse_to_sawd:
            sparse = torch.cat([sparse, self._context_token(context, prompts.image_index, None)], dim=1)
        return self.sawd(
            context.embeddings,
            context.image_pe,
            sparse,
            dense,
            image_index=prompts.image_index,
            unprompted=context.sawd_unprompted,
        )

    def _context_token(
        self, context: ImageContext, index: torch.Tensor | None, text: torch.Tensor | None
    ) -> torch.Tensor:
        """N x 1 x D T2VSE token of each prompt's image: the context's, else computed from ``text``."""
        token = context.t2vse_token
        if token is None:
            token = self._t2vse_token(context.embeddings, context.image_pe, text)
        return token if index is None else token[index]

    def _decode(
        self, context: ImageContext, prompts: Prompts, text: torch.Tensor | None, semantic: bool
    ) -> ModelOutput:
        """SAGD (and SAWD when ``semantic``) for checked prompts; see :meth:`forward`."""
        index = prompts.image_index
        embeddings = context.embeddings if index is None else context.embeddings[index]  # N x 256 x h x w
        sparse, dense = self.encode_prompts(
            prompts.is_point, prompts.boxes, prompts.points, embeddings.device, prompts.clicks
        )
        sagd_sparse = sawd_sparse = sparse
        run_sawd = semantic and self.sawd is not None
        if self.t2vse is not None:
            sagd_sparse = torch.cat([sparse, self._context_token(context, index, text)], dim=1)
            if self.t2vse_to_sawd and run_sawd:
                sawd_sparse = sagd_sparse

        masks, iou = self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=context.image_pe,
            sparse_prompt_embeddings=sagd_sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        out = ModelOutput(masks=self._upsample(masks), iou=iou)
        if run_sawd:
            sem = self.sawd(
                context.embeddings,
                context.image_pe,
                sawd_sparse,
                dense,
                image_index=index,
                unprompted=context.sawd_unprompted,
            )
            out.sem_masks = None if sem.mask is None else self._upsample(sem.mask)
            out.class_logits = sem.class_logits
            out.presence_logits = sem.presence_logits
            out.class_masks = sem.class_masks
        return out
