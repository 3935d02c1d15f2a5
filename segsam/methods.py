"""The method registry: config names -> how a method is built and what trains.

A method name is a config value (``methods:`` in ``config/config.yaml``) and a
table row; this registry is the one list of names (a new method is added
here only: :func:`segsam.config.check_names` checks ``methods:`` against it at
start-up). This module is read at workflow start-up, so it does not import torch.

Families (see :class:`MethodSpec` for the fields):

* **LiteMedSAM backbone** (``tiny_vit``, frozen, trains from the image
  embedding cache): ``medsam_lite`` (zero-shot), ``ft_decoder`` (prompt
  encoder + SAGD fine-tuned), ``segsam`` and the ablation rows of the paper's
  tables 4/8/6. The ablation rows are cumulative, as in the paper:
  ``sawd_pmt`` = row 1 (SAWD prompted branch), ``sawd_unpmt`` = row 2
  (+ unprompted branch), ``sawd_sem`` = row 3 (prompted + full-image semantic
  branch), ``t2vse`` = row 4 (row 2 + T2VSE), ``t2vse_v1`` = table 6 (row 4
  with the T2VSE token also fed to SAWD), ``cmsa`` = the last row (row 4 +
  CMSA, i.e. the same components as ``segsam``). Their baseline row is
  ``ft_decoder``. The paper runs SEG-SAM on SAM ViT-B with SAM-Med2D
  adapters; we use the frozen LiteMedSAM encoder because it is the only
  pretrained SAM-family encoder available offline and the CPU demo needs the
  embedding cache. ``build_model`` accepts a modified spec
  (``dataclasses.replace``) to run the same components on another backbone.
* **SAM ViT-B baselines** (``vit_b`` at 256 input, weights resized from
  1024): ``sam`` (zero-shot), ``ft_sam`` (frozen encoder; prompt encoder +
  decoder), ``sam_med2d`` (SAM-Med2D adapters + prompt encoder + decoder),
  ``medsam`` (image encoder + decoder; prompt encoder frozen, as MedSAM),
  ``med_sa`` (Med-SA adapters + decoder), and each of the last four with
  SAWD plugged in (``<baseline>+sawd``: prompted + unprompted branches,
  tables 2, 5, 7).
* **Prompt-free networks** of table 2: ``unet`` (nnU-Net-style DynUNet) and
  ``unetr`` (2-D UNETR), with a C + 1 class head, trained on images.
* **PG-SAM** (the second seed, :class:`PGSamParts`): a prompt-free SAM for
  multi-organ segmentation. Class text priors aligned with the image become
  the prompts of a SAM-style decoder with multi-level fusion and an
  iterative mask optimiser; C + 1 output channels, scored like the
  prompt-free networks. ``pg_sam`` on the frozen LiteMedSAM encoder (from the
  embedding cache), its ablation switches ``pg_sam_no_text`` (learned class
  queries instead of the text priors), ``pg_sam_no_mlff`` (no multi-level
  fusion) and ``pg_sam_k1`` (one decoding round, no mask optimiser), and
  ``pg_sam_vit_b`` (SAM ViT-B with LoRA on attention q and v, as the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from segsam.errors import ConfigError

__all__ = [
    "ENCODERS",
    "ADAPTERS",
    "NETWORKS",
    "COMPONENTS",
    "PG_SAM_MODULES",
    "PGSamParts",
    "MethodSpec",
    "METHODS",
    "get_method",
]

#: Image encoders: LiteMedSAM's TinyViT (64 x 64 embedding) and SAM ViT-B at 256 (16 x 16).
ENCODERS = ("tiny_vit", "vit_b")
#: Adapter styles for the ViT-B encoder (:mod:`segsam.models.adapters`; ``lora_qv``: LoRA on the
#: attention's query and value projections, :mod:`segsam.models.lora`).
ADAPTERS = ("sam_med2d", "med_sa", "lora_qv")
#: Prompt-free networks (:mod:`segsam.models.conventional`).
NETWORKS = ("unet", "unetr")
#: SEG-SAM components, named after the columns of the paper's table 4.
COMPONENTS = ("sawd_pmt", "sawd_unpmt", "sawd_sem", "t2vse", "t2vse_v1", "cmsa")

#: PG-SAM's own top-level sub-modules (:class:`segsam.models.pg_sam.PGSam`).
PG_SAM_MODULES = ("prior_aligner", "level_fusion", "semantic_decoder", "mask_optimiser")
_SAM_PARTS = ("prompt_encoder", "mask_decoder", "sawd", "t2vse")
_TOP_LEVEL = ("image_encoder", *_SAM_PARTS, "semantic_net", *PG_SAM_MODULES)


@dataclass(frozen=True)
class PGSamParts:
    """Which parts of PG-SAM are on (its ablation switches).

    Attributes:
        text_prior: The fine-grained modality prior aligner starts from the
            class text embeddings (False: from C learned class queries; the
            aligner, its guide map and prompts stay).
        mlff: Multi-level feature fusion in the decoder.
        rounds: K, decoding rounds of the iterative mask optimiser (1: a single
            pass and no optimiser).

    Raises:
        ValueError: If ``rounds`` is below 1.
    """

    text_prior: bool = True
    mlff: bool = True
    rounds: int = 3

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"PG-SAM needs at least one decoding round, got rounds={self.rounds}")

    @property
    def modules(self) -> tuple[str, ...]:
        """The PG-SAM sub-modules these parts build (all of them train)."""
        fusion = ("level_fusion",) if self.mlff else ()
        optimiser = ("mask_optimiser",) if self.rounds > 1 else ()
        return ("prior_aligner", *fusion, "semantic_decoder", *optimiser)

    @property
    def names(self) -> tuple[str, ...]:
        """The parts that are on, for tables: ``text_prior``, ``mlff``, ``imo(K=k)``."""
        parts = [name for name, on in (("text_prior", self.text_prior), ("mlff", self.mlff)) if on]
        return (*parts, f"imo(K={self.rounds})") if self.rounds > 1 else tuple(parts)


@dataclass(frozen=True)
class MethodSpec:
    """One row of the paper's tables.

    Attributes:
        name: Config name.
        display: Row label in tables and figures.
        trains: Whether the method has a train stage (False: zero-shot).
        trainable: Top-level sub-modules whose parameters train (any of
            ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` (SAGD),
            ``sawd``, ``t2vse``, ``semantic_net``, or PG-SAM's
            :data:`PG_SAM_MODULES`); everything else is frozen except adapters (below).
        description: One sentence saying what the method is and what trains (docs/methods.md).
        encoder: ``"tiny_vit"`` (LiteMedSAM) or ``"vit_b"`` (SAM ViT-B at
            256); None for prompt-free networks.
        adapter: ``"sam_med2d"`` or ``"med_sa"``: adapters are added to every
            ViT-B block and their parameters train; ``"lora_qv"``: LoRA on every
            block's attention query and value projections (PG-SAM's).
        components: SEG-SAM components that are on (subset of
            :data:`COMPONENTS`).
        network: ``"unet"`` or ``"unetr"`` for prompt-free networks.
        pg_sam: PG-SAM's parts for a PG-SAM method (then ``trainable`` lists
            exactly :attr:`PGSamParts.modules`); None otherwise.

    Raises:
        ValueError: If the fields contradict each other (unknown encoder,
            adapter or component, adapters without ViT-B, a component whose
            module does not train in a trained method, ...).
    """

    name: str
    display: str
    trains: bool
    trainable: tuple[str, ...]
    description: str
    encoder: str | None = "tiny_vit"
    adapter: str | None = None
    components: tuple[str, ...] = ()
    network: str | None = None
    pg_sam: PGSamParts | None = None

    def __post_init__(self) -> None:
        where = f"method {self.name!r}"
        if self.network is not None:
            if self.network not in NETWORKS:
                raise ValueError(f"{where}: unknown network {self.network!r}; known: {', '.join(NETWORKS)}")
            if self.encoder is not None or self.adapter is not None or self.components:
                raise ValueError(f"{where}: a prompt-free network has no encoder, adapter or SEG-SAM components")
        elif self.encoder not in ENCODERS:
            raise ValueError(f"{where}: unknown encoder {self.encoder!r}; known: {', '.join(ENCODERS)}")
        if self.adapter is not None:
            if self.adapter not in ADAPTERS:
                raise ValueError(f"{where}: unknown adapter {self.adapter!r}; known: {', '.join(ADAPTERS)}")
            if self.encoder != "vit_b":
                raise ValueError(f"{where}: adapters need the vit_b encoder, not {self.encoder!r}")
            if "image_encoder" in self.trainable:
                raise ValueError(f"{where}: adapters make no sense when the whole image encoder trains")
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown:
            raise ValueError(f"{where}: unknown components {unknown}; known: {', '.join(COMPONENTS)}")
        parts = set(self.components)
        if "sawd_sem" in parts and "sawd_unpmt" in parts:
            raise ValueError(f"{where}: sawd_sem replaces sawd_unpmt; choose one")
        if "t2vse_v1" in parts and not {"t2vse", "sawd_pmt"} <= parts:
            raise ValueError(
                f"{where}: t2vse_v1 feeds the T2VSE token to SAWD's prompted branch: needs t2vse and sawd_pmt"
            )
        if "cmsa" in parts and "sawd_pmt" not in parts:
            raise ValueError(f"{where}: cmsa aligns the SAWD mask with SAGD's: needs sawd_pmt")
        bad = [t for t in self.trainable if t not in _TOP_LEVEL]
        if bad:
            raise ValueError(f"{where}: unknown trainable sub-modules {bad}; known: {', '.join(_TOP_LEVEL)}")
        if self.trains != bool(self.trainable or self.adapter):
            raise ValueError(f"{where}: trains={self.trains} but trainable={self.trainable}, adapter={self.adapter}")
        if self.trains:
            if self.has_sawd and "sawd" not in self.trainable:
                raise ValueError(f"{where}: SAWD starts random, so 'sawd' must train")
            if self.has_t2vse and "t2vse" not in self.trainable:
                raise ValueError(f"{where}: T2VSE starts random, so 't2vse' must train")
        self._check_pg_sam(where)

    def _check_pg_sam(self, where: str) -> None:
        """PG-SAM's modules belong to PG-SAM methods, which have an encoder, no SAM decoder parts and no adapters
        but LoRA; its modules start (partly) random and all train."""
        mine = [t for t in self.trainable if t in PG_SAM_MODULES]
        if self.pg_sam is None:
            if mine:
                raise ValueError(f"{where}: {mine} are PG-SAM modules; set pg_sam to build them")
            return
        if self.network is not None or self.encoder is None:
            raise ValueError(f"{where}: PG-SAM is built on a SAM image encoder, not a prompt-free network")
        if self.components:
            raise ValueError(f"{where}: PG-SAM has no SEG-SAM components, got {list(self.components)}")
        if self.adapter not in (None, "lora_qv"):
            raise ValueError(f"{where}: PG-SAM adapts its encoder with LoRA (lora_qv), not {self.adapter!r}")
        sam_parts = [t for t in self.trainable if t in _SAM_PARTS or t == "semantic_net"]
        if sam_parts:
            raise ValueError(f"{where}: PG-SAM has no {sam_parts}; its decoder is 'semantic_decoder'")
        if set(mine) != set(self.pg_sam.modules):
            raise ValueError(f"{where}: PG-SAM with {self.pg_sam} trains {list(self.pg_sam.modules)}, got {mine}")

    @property
    def prompt_free(self) -> bool:
        """True for the conventional networks: no SAM parts, images in, C + 1 classes out.

        PG-SAM takes no prompts either but is built on a SAM encoder: see :attr:`prompted`.
        """
        return self.network is not None

    @property
    def prompted(self) -> bool:
        """True when the method decodes one object per prompt (the SAM family of table 1).

        False for the conventional networks and PG-SAM, which segment every
        class of an image at once (C + 1 channels) and are scored like
        table 2's prompt-free rows.
        """
        return self.network is None and self.pg_sam is None

    @property
    def needs_text(self) -> bool:
        """Whether the model reads the class text embeddings (T2VSE, or PG-SAM's text priors)."""
        return self.has_t2vse or (self.pg_sam is not None and self.pg_sam.text_prior)

    @property
    def parts(self) -> tuple[str, ...]:
        """The components that are on, for tables: SEG-SAM's, or PG-SAM's (:attr:`PGSamParts.names`)."""
        return self.components if self.pg_sam is None else self.pg_sam.names

    @property
    def encoder_frozen(self) -> bool:
        """True when nothing in the image encoder trains: train from the embedding cache."""
        return not self.prompt_free and "image_encoder" not in self.trainable and self.adapter is None

    @property
    def has_sawd(self) -> bool:
        """Whether the model has a semantic-aware decoder."""
        return bool({"sawd_pmt", "sawd_unpmt", "sawd_sem"} & set(self.components))

    @property
    def has_t2vse(self) -> bool:
        """Whether the model has the text-to-vision module (needs class text embeddings)."""
        return "t2vse" in self.components


_SAWD = ("sawd_pmt", "sawd_unpmt")
_DECODERS = ("prompt_encoder", "mask_decoder")
_SEGSAM_TRAINS = ("prompt_encoder", "mask_decoder", "sawd", "t2vse")

_BASELINES = {
    # name: (display, trainable, adapter, description)
    "ft_sam": (
        "FT-SAM",
        _DECODERS,
        None,
        "SAM ViT-B at 256, encoder frozen; prompt encoder and mask decoder fine-tuned.",
    ),
    "sam_med2d": (
        "SAM-Med2D",
        _DECODERS,
        "sam_med2d",
        "SAM ViT-B at 256 frozen with SAM-Med2D adapters (channel attention + conv, parallel to each MLP); "
        "adapters, prompt encoder and mask decoder train.",
    ),
    "medsam": (
        "MedSAM",
        ("image_encoder", "mask_decoder"),
        None,
        "SAM ViT-B at 256; image encoder and mask decoder fully fine-tuned, prompt encoder frozen (as MedSAM).",
    ),
    "med_sa": (
        "Med-SA",
        ("mask_decoder",),
        "med_sa",
        "SAM ViT-B at 256 frozen with Med-SA adapters (after attention + scaled parallel to each MLP); adapters "
        "and mask decoder train.",
    ),
}

_ABLATIONS = {
    # name: (display, components, description)
    "sawd_pmt": (
        "+SAWD_pmt (ablation 1)",
        ("sawd_pmt",),
        "Table 4 row 1: SAGD + SAWD's prompted branch (SO-token) only.",
    ),
    "sawd_unpmt": (
        "+SAWD_pmt+SAWD_unpmt (ablation 2)",
        _SAWD,
        "Table 4 row 2: SAGD + full SAWD (SO-token and CO-token presence branch).",
    ),
    "sawd_sem": (
        "+SAWD_pmt+SAWD_sem (ablation 3)",
        ("sawd_pmt", "sawd_sem"),
        "Table 4 row 3: SAWD whose unprompted branch segments every class (full-image semantic masks) instead "
        "of classifying.",
    ),
    "t2vse": (
        "+SAWD+T2VSE (ablation 4)",
        (*_SAWD, "t2vse"),
        "Table 4 row 4: SAGD + SAWD + T2VSE token for SAGD; no CMSA.",
    ),
    "t2vse_v1": (
        "+SAWD+T2VSE_v1 (table 6)",
        (*_SAWD, "t2vse", "t2vse_v1"),
        "Table 6: as ablation 4, with the T2VSE token also appended to SAWD's prompt tokens.",
    ),
    "cmsa": (
        "+SAWD+T2VSE+CMSA (ablation 5)",
        (*_SAWD, "t2vse", "cmsa"),
        "Table 4 last row: all components (same as segsam), listed as its own ablation row.",
    ),
}


def _zero_shot_and_decoder_specs() -> list[MethodSpec]:
    """LiteMedSAM zero-shot and with its decoder fine-tuned, and SAM ViT-B zero-shot."""
    return [
        MethodSpec(
            name="medsam_lite",
            display="LiteMedSAM (zero-shot)",
            trains=False,
            trainable=(),
            description="LiteMedSAM (MedSAM distilled into TinyViT) as released, no training.",
        ),
        MethodSpec(
            name="ft_decoder",
            display="LiteMedSAM + fine-tuned decoder",
            trains=True,
            trainable=_DECODERS,
            description="Frozen LiteMedSAM encoder; prompt encoder and SAM mask decoder (SAGD) fine-tuned.",
        ),
        MethodSpec(
            name="sam",
            display="SAM",
            trains=False,
            trainable=(),
            encoder="vit_b",
            description="SAM ViT-B (1024-trained weights resized to 256 input), no training.",
        ),
    ]


def _baseline_specs() -> list[MethodSpec]:
    """The fine-tuned SAM ViT-B baselines of :data:`_BASELINES`, in its order."""
    return [
        MethodSpec(
            name=name,
            display=display,
            trains=True,
            trainable=trainable,
            encoder="vit_b",
            adapter=adapter,
            description=description,
        )
        for name, (display, trainable, adapter, description) in _BASELINES.items()
    ]


def _segsam_specs() -> list[MethodSpec]:
    """SEG-SAM with all its components: on the frozen LiteMedSAM encoder (the demo's), and as the paper
    trains it, on SAM ViT-B with SAM-Med2D's adapters (config/paper.yaml)."""
    components = (*_SAWD, "t2vse", "cmsa")
    return [
        MethodSpec(
            name="segsam",
            display="SEG-SAM",
            trains=True,
            trainable=_SEGSAM_TRAINS,
            components=components,
            description="Frozen LiteMedSAM encoder; prompt encoder, SAGD, SAWD (SO + CO tokens) and T2VSE train "
            "with CMSA.",
        ),
        MethodSpec(
            name="segsam_vit_b",
            display="SEG-SAM (ViT-B)",
            trains=True,
            trainable=_SEGSAM_TRAINS,
            encoder="vit_b",
            adapter="sam_med2d",
            components=components,
            description="The paper's SEG-SAM: SAM ViT-B frozen but for SAM-Med2D's adapters; prompt encoder, "
            "SAGD, SAWD and T2VSE train with CMSA.",
        ),
    ]


def _plugin_specs() -> list[MethodSpec]:
    """Each baseline of :data:`_BASELINES` with SAWD plugged in (``<baseline>+sawd``)."""
    return [
        MethodSpec(
            name=f"{name}+sawd",
            display=f"{display} + SAWD",
            trains=True,
            trainable=(*trainable, "sawd"),
            encoder="vit_b",
            adapter=adapter,
            components=_SAWD,
            description=f"{display} with SAWD plugged in (prompted + unprompted branches); SAWD trains too.",
        )
        for name, (display, trainable, adapter, _) in _BASELINES.items()
    ]


def _ablation_specs() -> list[MethodSpec]:
    """The ablation rows of :data:`_ABLATIONS` on the frozen LiteMedSAM encoder, in its order."""
    return [
        MethodSpec(
            name=name,
            display=f"LiteMedSAM {display}",
            trains=True,
            trainable=_SEGSAM_TRAINS if "t2vse" in components else ("prompt_encoder", "mask_decoder", "sawd"),
            components=components,
            description=f"{description} Frozen LiteMedSAM encoder.",
        )
        for name, (display, components, description) in _ABLATIONS.items()
    ]


def _network_specs() -> list[MethodSpec]:
    """The prompt-free networks of table 2."""
    return [
        MethodSpec(
            name="unet",
            display="nnU-Net (2D)",
            trains=True,
            trainable=("semantic_net",),
            encoder=None,
            network="unet",
            description="Prompt-free nnU-Net-style 2-D U-Net (MONAI DynUNet) with a C+1 class head, trained on images.",
        ),
        MethodSpec(
            name="unetr",
            display="UNETR (2D)",
            trains=True,
            trainable=("semantic_net",),
            encoder=None,
            network="unetr",
            description="Prompt-free 2-D UNETR (MONAI) with a C+1 class head, trained on images.",
        ),
    ]


_PG_SAM = {
    # name: (display, parts, description)
    "pg_sam": (
        "PG-SAM",
        PGSamParts(),
        "Prompt-free PG-SAM on the frozen LiteMedSAM encoder: class text priors aligned with the image give the "
        "decoder's prompts; multi-level fusion; 3 rounds of the iterative mask optimiser.",
    ),
    "pg_sam_no_text": (
        "PG-SAM w/o text priors",
        PGSamParts(text_prior=False),
        "PG-SAM ablation: the prior aligner starts from learned class queries instead of the class text.",
    ),
    "pg_sam_no_mlff": (
        "PG-SAM w/o MLFF",
        PGSamParts(mlff=False),
        "PG-SAM ablation: no multi-level feature fusion in the decoder.",
    ),
    "pg_sam_k1": (
        "PG-SAM K=1",
        PGSamParts(rounds=1),
        "PG-SAM ablation: one decoding round, no iterative mask optimiser.",
    ),
}


def _pg_sam_specs() -> list[MethodSpec]:
    """PG-SAM and its ablation switches on the frozen LiteMedSAM encoder, then PG-SAM on ViT-B with LoRA."""
    specs = [
        MethodSpec(
            name=name, display=display, trains=True, trainable=parts.modules, description=description, pg_sam=parts
        )
        for name, (display, parts, description) in _PG_SAM.items()
    ]
    specs.append(
        MethodSpec(
            name="pg_sam_vit_b",
            display="PG-SAM (ViT-B + LoRA)",
            trains=True,
            trainable=PGSamParts().modules,
            encoder="vit_b",
            adapter="lora_qv",
            pg_sam=PGSamParts(),
            description="PG-SAM as in its paper: SAM ViT-B at 256 frozen with LoRA on attention q and v; the "
            "multi-level fusion reads intermediate ViT blocks.",
        )
    )
    return specs


def _registry() -> dict[str, MethodSpec]:
    """Every method by name, the families in a fixed order: the order of METHODS and of ``get_method``'s message."""
    specs = [
        *_zero_shot_and_decoder_specs(),
        *_baseline_specs(),
        *_segsam_specs(),
        *_plugin_specs(),
        *_ablation_specs(),
        *_network_specs(),
        *_pg_sam_specs(),
    ]
    return {spec.name: spec for spec in specs}


METHODS: dict[str, MethodSpec] = _registry()


def get_method(name: str) -> MethodSpec:
    """Look a method up by config name.

    Raises:
        ConfigError: naming the unknown method and the known ones.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
