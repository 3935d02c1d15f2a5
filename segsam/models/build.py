"""``build_model``: one :class:`~segsam.models.segsam_net.PromptableModel` per method.

What a method gets (its :class:`~segsam.methods.MethodSpec`):

* encoder ``tiny_vit``: LiteMedSAM's TinyViT, prompt encoder and SAGD
  (64 x 64 embedding at 256); ``vit_b``: SAM ViT-B at 256 input (16 x 16
  embedding), with SAM-Med2D or Med-SA adapters when the spec says so;
* SAWD with the branches of its components; T2VSE when ``t2vse`` is on;
* prompt-free methods get only ``semantic_net`` (U-Net / UNETR);
* PG-SAM methods get a :class:`~segsam.models.pg_sam.PGSam` (:func:`build_pg_sam`):
  the encoder (ViT-B with LoRA on q and v, ``lora_qv``), the prior aligner, the
  multi-level fusion, the class decoder and the mask optimiser their
  :class:`~segsam.methods.PGSamParts` switch on.

Weights. ``encoder_weights`` is a state dict in SAM's layout
(``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``): the LiteMedSAM
checkpoint for ``tiny_vit`` methods, ``sam_vit_b_01ec64.pth`` (or a
SAM-Med2D / MedSAM ViT-B checkpoint) for ``vit_b`` methods. The prompt encoder
and SAGD load strictly; the image encoder loads strictly for TinyViT and, for
ViT-B, with its position tensors resized to 256 input
(:func:`segsam.models.vit.load_vit_weights`; adapters keep their
initialisation). SAWD and T2VSE start random, except that SAWD's two-way
transformer and output upscaling are copied from SAGD's (pretrained when
weights are given): the prompted branch then starts with SAM's image-token
interaction, while its SO-token, self-attention, hypernetwork, class head and
the whole unprompted branch are new. PG-SAM's decoder takes SAM's two-way
transformer, output upscaling, first hypernetwork MLP and positional encoding
from the checkpoint (:func:`load_pg_sam_weights`); its class tokens, prior
aligner, fusion and mask optimiser start random.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from segsam.methods import ENCODERS, MethodSpec, get_method
from segsam.models.adapters import add_adapters, is_adapter_parameter
from segsam.models.conventional import build_conventional
from segsam.models.level_fusion import MultiLevelFusion
from segsam.models.level_pyramid import EmbeddingPyramid
from segsam.models.litemedsam import EMBED_DIM, PairedMaskDecoder, build_tiny_vit
from segsam.models.lora import add_lora
from segsam.models.mask_optimiser import IterativeMaskOptimiser
from segsam.models.pg_decoder import PriorGuidedDecoder
from segsam.models.pg_sam import PGSam
from segsam.models.prior_aligner import PriorAligner
from segsam.models.sam_compat import PromptEncoder, TwoWayTransformer
from segsam.models.sawd import SemanticAwareDecoder
from segsam.models.segsam_net import PromptableModel
from segsam.models.t2vse import TextToVisionEnhancement
from segsam.models.vit import VIT_B, ViTGeometry, build_sam_vit, level_taps, load_vit_weights
from segsam.models.weights import WeightsError, load_state_dict

__all__ = [
    "IMAGE_SIZE",
    "EMBEDDING_SIZE",
    "build_image_encoder",
    "build_model",
    "build_pg_sam",
    "build_tiny_vit",
    "load_pg_sam_weights",
    "load_sam_weights",
    "with_backbone",
]

IMAGE_SIZE = 256
#: Side of each encoder's image embedding at 256 input: TinyViT's 64 x 64, ViT-B's 16 x 16 patch grid.
EMBEDDING_SIZE = {"tiny_vit": 64, "vit_b": VIT_B.embedding_size}
_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def _two_way_transformer() -> TwoWayTransformer:
    return TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8)


def _sagd() -> PairedMaskDecoder:
    return PairedMaskDecoder(
        transformer_dim=EMBED_DIM,
        transformer=_two_way_transformer(),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def load_sam_weights(model: PromptableModel, path: Path | str, *, encoder: str) -> list[str]:
    """Loads a SAM-layout checkpoint into a promptable model's SAM parts.

    Args:
        model (PromptableModel): Target; its ``image_encoder`` may be None
          (then the checkpoint's encoder tensors are skipped).
        path (Path | str): State dict with ``image_encoder.*``,
          ``prompt_encoder.*`` and ``mask_decoder.*`` keys.
        encoder (str): ``"tiny_vit"`` (strict) or ``"vit_b"`` (position
          tensors resized, adapters may be missing).

    Returns:
        list[str]: Encoder keys whose tensors were resized (ViT-B only).

    Raises:
        WeightsError: If the file cannot be read, has keys outside the three
          parts, or does not fit the model (the message names the part).
    """
    state = load_state_dict(path)
    split: dict[str, dict[str, torch.Tensor]] = {part: {} for part in _PARTS}
    other = []
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part in split:
            split[part][rest] = value
        else:
            other.append(key)
    if other:
        raise WeightsError(f"{path}: keys outside {', '.join(_PARTS)}: {other[:5]}")
    resized: list[str] = []
    for part in _PARTS:
        module = getattr(model, part)
        if module is not None:
            resized += _load_part(module, split[part], part, encoder, path)
    return [f"image_encoder.{key}" for key in resized]


def _load_part(
    module: nn.Module, state: dict[str, torch.Tensor], part: str, encoder: str, path: Path | str
) -> list[str]:
    """Loads one SAM part (keys without the part's prefix): a ViT-B encoder with resized position
    tensors, anything else strictly. Returns the resized keys; a misfit is a WeightsError naming the part."""
    try:
        if part == "image_encoder" and encoder == "vit_b":
            return load_vit_weights(module, state)
        module.load_state_dict(state, strict=True)
        return []
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"{path}: its {part} weights do not fit the {encoder} model: {first}") from error


def build_image_encoder(encoder: str, weights: Path | str) -> nn.Module:
    """The pretrained image encoder alone, frozen and in eval mode (the embedding cache's encoder).

    Args:
        encoder (str): ``"tiny_vit"`` (loads strictly) or ``"vit_b"`` (SAM
          ViT-B at 256, position tensors resized).
        weights (Path | str): SAM-layout checkpoint; only its
          ``image_encoder.*`` tensors are read.

    Returns:
        nn.Module: B x 3 x 256 x 256 -> B x 256 x h x w (64 x 64 for TinyViT,
          16 x 16 for ViT-B).

    Raises:
        ValueError: If the encoder name is unknown.
        WeightsError: If the file has no encoder tensors or they do not fit.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    prefix = "image_encoder."
    state = {k[len(prefix) :]: v for k, v in load_state_dict(weights).items() if k.startswith(prefix)}
    if not state:
        raise WeightsError(f"{weights}: no image_encoder.* tensors (expected a SAM-layout checkpoint)")
    module = build_tiny_vit() if encoder == "tiny_vit" else build_sam_vit(VIT_B)
    _load_part(module, state, "image_encoder", encoder, weights)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def _vit_geometry(spec: MethodSpec, text_dim: int | None, vit_geometry: ViTGeometry | None) -> ViTGeometry:
    """Check the arguments of a promptable method; return the ViT geometry its ``vit_b`` encoder gets.

    Raises:
        ValueError: ``text_dim`` missing for T2VSE, a geometry for a non-ViT method,
            or a geometry without 256 input and 256 output channels.
    """
    if spec.needs_text and (text_dim is None or text_dim < 1):
        raise ValueError(
            f"method {spec.name!r} reads class text: pass text_dim (the width of the class text embeddings)"
        )
    if vit_geometry is not None and spec.encoder != "vit_b":
        raise ValueError(f"vit_geometry applies to vit_b methods, not {spec.name!r} ({spec.encoder})")
    geometry = vit_geometry or VIT_B
    if geometry.image_size != IMAGE_SIZE or geometry.out_chans != EMBED_DIM:
        raise ValueError(f"the ViT must take {IMAGE_SIZE} x {IMAGE_SIZE} input and give {EMBED_DIM} channels")
    return geometry


def _method_image_encoder(spec: MethodSpec, geometry: ViTGeometry, with_image_encoder: bool) -> nn.Module | None:
    """The method's image encoder (with its adapters), or None when it is frozen and not asked for."""
    if not (with_image_encoder or not spec.encoder_frozen):
        return None
    if spec.encoder == "tiny_vit":
        return build_tiny_vit()
    image_encoder = build_sam_vit(geometry)
    if spec.adapter == "lora_qv":
        add_lora(image_encoder)
    elif spec.adapter is not None:
        add_adapters(image_encoder, spec.adapter)
    return image_encoder


def _method_sawd(spec: MethodSpec, num_classes: int) -> SemanticAwareDecoder | None:
    """SAWD with the branches of the method's components (None without SAWD)."""
    if not spec.has_sawd:
        return None
    parts = set(spec.components)
    prompted = "sawd_pmt" in parts
    return SemanticAwareDecoder(
        num_classes=num_classes,
        transformer=_two_way_transformer() if prompted else None,
        transformer_dim=EMBED_DIM,
        prompted=prompted,
        unprompted=bool({"sawd_unpmt", "sawd_sem"} & parts),
        semantic_unprompted="sawd_sem" in parts,
    )


def _prompt_free_model(spec: MethodSpec, num_classes: int) -> PromptableModel:
    """A prompt-free method: only its ``semantic_net``, in eval mode, trainable parameters set."""
    network = build_conventional(spec.network, num_classes, image_size=IMAGE_SIZE)
    model = PromptableModel(num_classes=num_classes, semantic_net=network, image_size=IMAGE_SIZE)
    set_trainable(model, spec)
    return model.eval()


def build_model(
    method: str | MethodSpec,
    *,
    encoder_weights: Path | str | None,
    num_classes: int,
    text_dim: int | None,
    vit_geometry: ViTGeometry | None = None,
    with_image_encoder: bool = True,
) -> PromptableModel:
    """Builds the model of a method, loads pretrained weights, freezes what does not train.

    Args:
        method (str | MethodSpec): Registry name (or a spec, e.g. one changed
          with ``dataclasses.replace`` to run a method on another backbone).
        encoder_weights (Path | str | None): SAM-layout checkpoint (see the
          module docstring), or None for random weights. Ignored by
          prompt-free methods.
        num_classes (int): C, the vocabulary size.
        text_dim (int | None): d_text of the class text embeddings; required
          when the method has T2VSE.
        vit_geometry (ViTGeometry | None): ViT shape for ``vit_b`` methods
          (default ViT-B at 256). A smaller geometry runs the same code
          faster (tests); pretrained ViT-B weights need the default.
        with_image_encoder (bool): Build the image encoder. Methods whose
          encoder is frozen train from cached embeddings and may leave it
          out (then ``encode`` raises); methods that train encoder
          parameters always get it.

    Returns:
        PromptableModel: In eval mode, with ``requires_grad`` set by
          :func:`~segsam.methods.set_trainable` (a :class:`~segsam.models.pg_sam.PGSam`
          for PG-SAM methods).

    Raises:
        segsam.errors.ConfigError: If the method name is unknown.
        ValueError: If ``num_classes`` is not positive or ``text_dim`` is
          missing for T2VSE or PG-SAM's text priors.
        WeightsError: If the checkpoint does not fit.
    """
    spec = get_method(method) if isinstance(method, str) else method
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if spec.prompt_free:
        return _prompt_free_model(spec, num_classes)
    geometry = _vit_geometry(spec, text_dim, vit_geometry)
    if spec.pg_sam is not None:
        return _pg_sam_model(spec, encoder_weights, num_classes, text_dim, geometry, with_image_encoder)
    embedding = EMBEDDING_SIZE["tiny_vit"] if spec.encoder == "tiny_vit" else geometry.embedding_size
    # built in this order: the random initialisation draws follow it
    image_encoder = _method_image_encoder(spec, geometry, with_image_encoder)
    sawd = _method_sawd(spec, num_classes)
    t2vse = TextToVisionEnhancement(text_dim, EMBED_DIM) if spec.has_t2vse else None
    model = PromptableModel(
        num_classes=num_classes,
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM,
            image_embedding_size=(embedding, embedding),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=_sagd(),
        sawd=sawd,
        t2vse=t2vse,
        t2vse_to_sawd="t2vse_v1" in spec.components,
        cmsa="cmsa" in spec.components,
        image_size=IMAGE_SIZE,
    )
    if encoder_weights is not None:
        load_sam_weights(model, encoder_weights, encoder=spec.encoder)
    if sawd is not None and sawd.prompted:
        _start_sawd_from_sagd(sawd, model.mask_decoder)
    set_trainable(model, spec)
    return model.eval()


def _start_sawd_from_sagd(sawd: SemanticAwareDecoder, sagd: nn.Module) -> None:
    """SAWD's prompted branch starts as SAGD's first mask output: the same two-way transformer and
    upscaling, the SO-token equal to SAGD's mask token 0 and the mask hypernetwork equal to its.

    The SO-token thus attends to the prompted object from the first step, so the class head reads
    that object's features instead of waiting for a random token to learn where to look.
    """
    sawd.transformer.load_state_dict(sagd.transformer.state_dict())
    sawd.output_upscaling.load_state_dict(sagd.output_upscaling.state_dict())
    sawd.mask_hypernet.load_state_dict(sagd.output_hypernetworks_mlps[0].state_dict())
    with torch.no_grad():
        sawd.so_token.weight.copy_(sagd.mask_tokens.weight[:1])


def build_pg_sam(
    spec: MethodSpec, num_classes: int, text_dim: int | None, geometry: ViTGeometry, with_image_encoder: bool
) -> PGSam:
    """PG-SAM's modules for a spec, with random weights (:func:`build_model` loads and freezes).

    The multi-level fusion reads the intermediate blocks of a ViT-B whose
    LoRA trains (:func:`segsam.models.vit.level_taps`); with a frozen encoder
    (the embedding cache) it derives two coarser levels from the embedding.

    Args:
        spec: A PG-SAM method (``spec.pg_sam`` set).
        num_classes: C.
        text_dim: d_text of the class text (used when the text priors are on).
        geometry: The ViT's shape (``vit_b`` methods).
        with_image_encoder: Build a frozen encoder too (one that trains is always built).

    Raises:
        ValueError: For a spec without PG-SAM parts.
    """
    parts = spec.pg_sam
    if parts is None:
        raise ValueError(f"method {spec.name!r} is not a PG-SAM method")
    embedding = EMBEDDING_SIZE["tiny_vit"] if spec.encoder == "tiny_vit" else geometry.embedding_size
    # built in this order: the random initialisation draws follow it
    image_encoder = _method_image_encoder(spec, geometry, with_image_encoder)
    taps = level_taps(geometry) if parts.mlff and not spec.encoder_frozen and spec.encoder == "vit_b" else ()
    fusion = None
    if parts.mlff and taps:
        fusion = MultiLevelFusion([geometry.embed_dim] * len(taps), EMBED_DIM)
    elif parts.mlff:
        pyramid = EmbeddingPyramid(EMBED_DIM)
        fusion = MultiLevelFusion(pyramid.channels, EMBED_DIM, pyramid=pyramid)
    return PGSam(
        num_classes=num_classes,
        prior_aligner=PriorAligner(num_classes, EMBED_DIM, text_dim if parts.text_prior else None),
        semantic_decoder=PriorGuidedDecoder(num_classes, _two_way_transformer(), EMBED_DIM, embedding),
        level_fusion=fusion,
        mask_optimiser=IterativeMaskOptimiser(num_classes, EMBED_DIM) if parts.rounds > 1 else None,
        rounds=parts.rounds,
        image_encoder=image_encoder,
        encoder_taps=taps,
        image_size=IMAGE_SIZE,
    )


#: SAM-layout checkpoint prefixes -> the PG-SAM sub-modules they initialise.
_PG_SAM_FROM_SAM = {
    "mask_decoder.transformer.": "semantic_decoder.transformer",
    "mask_decoder.output_upscaling.": "semantic_decoder.output_upscaling",
    "mask_decoder.output_hypernetworks_mlps.0.": "semantic_decoder.hypernetwork",
    "prompt_encoder.pe_layer.": "semantic_decoder.pe_layer",
}


def load_pg_sam_weights(model: PGSam, path: Path | str, *, encoder: str) -> None:
    """Loads the parts of a SAM-layout checkpoint that PG-SAM shares with SAM.

    The image encoder (when built) as for the other methods, and SAM's two-way
    transformer, output upscaling, first hypernetwork MLP and positional
    encoding into the decoder, strictly; the rest of the checkpoint (SAM's
    prompt embeddings, mask and IoU tokens, other heads) has no place in PG-SAM.

    Raises:
        WeightsError: If the file cannot be read or a part does not fit (the message names it).
    """
    state = load_state_dict(path)
    prefix = "image_encoder."
    if model.image_encoder is not None:
        encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        _load_part(model.image_encoder, encoder_state, "image_encoder", encoder, path)
    for source, target in _PG_SAM_FROM_SAM.items():
        part = {k[len(source) :]: v for k, v in state.items() if k.startswith(source)}
        _load_part(model.get_submodule(target), part, target, encoder, path)


def _pg_sam_model(
    spec: MethodSpec,
    encoder_weights: Path | str | None,
    num_classes: int,
    text_dim: int | None,
    geometry: ViTGeometry,
    with_image_encoder: bool,
) -> PGSam:
    """A PG-SAM method's model: built, pretrained parts loaded, what does not train frozen, in eval mode."""
    model = build_pg_sam(spec, num_classes, text_dim, geometry, with_image_encoder)
    if encoder_weights is not None:
        load_pg_sam_weights(model, encoder_weights, encoder=spec.encoder)
    set_trainable(model, spec)
    return model.eval()


def with_backbone(spec: MethodSpec, encoder: str, adapter: str | None = None) -> MethodSpec:
    """The same method on another backbone (e.g. SEG-SAM on ViT-B + SAM-Med2D adapters, as in the paper).

    Args:
        spec (MethodSpec): A promptable method.
        encoder (str): ``"tiny_vit"`` or ``"vit_b"``.
        adapter (str | None): Adapter style for ``vit_b``.

    Returns:
        MethodSpec: A copy named ``<name>@<encoder>[+<adapter>]``.

    Raises:
        ValueError: If the spec is prompt-free or the combination is invalid.
    """
    if spec.prompt_free:
        raise ValueError(f"{spec.name!r} is prompt-free and has no SAM backbone")
    suffix = encoder if adapter is None else f"{encoder}+{adapter}"
    return replace(spec, name=f"{spec.name}@{suffix}", encoder=encoder, adapter=adapter)


def set_trainable(model: nn.Module, spec: MethodSpec) -> None:
    """Freeze every parameter of ``model`` except those ``spec`` trains.

    A parameter trains when its top-level sub-module is in ``spec.trainable``
    or, for a method with adapters, when it is an adapter parameter of the
    image encoder (:func:`segsam.models.adapters.is_adapter_parameter`).
    """
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        adapter = spec.adapter is not None and top == "image_encoder" and is_adapter_parameter(name)
        param.requires_grad = top in spec.trainable or adapter


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
