"""``segsam`` console entry point.

segsam methods            # trainable / frozen parameter counts per method (Markdown)
segsam check-config FILE  # validate config/config.yaml + FILE overlays, print the config hash
segsam random-vit-b PATH  # a random SAM ViT-B in the official layout (offline stand-in), prints its sha256
segsam accept-descriptions [CLASS ...]  # move reviewed LLM descriptions into the committed file
segsam predict IN OUT --method M [--prompts FILE | --prompt-free]  # segment your own scan (docs/predict.md)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segsam.errors import SegsamError


def methods_table(num_classes: int | None = None, text_dim: int = 384) -> str:
    """Markdown table of the registered methods with their parameter counts.

    Every model is built by :func:`segsam.models.build.build_model` with random
    weights (the counts do not depend on them), including its image encoder.

    Args:
        num_classes: C for SAWD / semantic heads; default: the size of the
            default config's vocabulary.
        text_dim: Width of the class text embeddings (384 for the offline MiniLM).
    """
    import gc

    from segsam.methods import METHODS
    from segsam.models.build import build_model, parameter_counts

    if num_classes is None:
        from segsam.config import REPO_ROOT, load_config
        from segsam.data.vocabulary import Vocabulary

        vocabulary = Path(load_config()["vocabulary"])
        num_classes = len(Vocabulary.read(vocabulary if vocabulary.is_absolute() else REPO_ROOT / vocabulary))

    lines = [
        f"Counts for C = {num_classes} classes and {text_dim}-d text embeddings.",
        "",
        "| Method | Table row | Encoder | Encoder frozen | Components | Trains | Trainable params | Frozen "
        "params | What trains |",
        "|---|---|---|---|---|---|---:|---:|---|",
    ]
    for spec in METHODS.values():
        model = build_model(spec.name, encoder_weights=None, num_classes=num_classes, text_dim=text_dim)
        trainable, frozen = parameter_counts(model)
        del model
        gc.collect()
        parts = list(spec.trainable) + ([f"{spec.adapter} adapters"] if spec.adapter else [])
        encoder = spec.encoder or spec.network
        frozen_encoder = "—" if spec.prompt_free else ("yes (embedding cache)" if spec.encoder_frozen else "no")
        lines.append(
            f"| `{spec.name}` | {spec.display} | "
            f"{encoder}{' + ' + spec.adapter + ' adapters' if spec.adapter else ''} | "
            f"{frozen_encoder} | {', '.join(spec.parts) or '—'} | {'yes' if spec.trains else 'no'} | "
            f"{trainable:,} | {frozen:,} | {', '.join(parts) or '—'} |"
        )
    return "\n".join(lines)


#: Where rule describe_classes puts the LLM's replies (workflow/rules/text.smk).
GENERATED_DESCRIPTIONS = "results/cache/llm_descriptions.json"


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` subcommand's options (the logic is :func:`segsam.predict.run.predict`)."""
    predict = sub.add_parser(
        "predict",
        help="segment a 3D scan (NIfTI, MHA, NRRD or a DICOM series folder; or a folder of scans) with a method",
        description="Segment a 3D scan; writes a label volume on the input's grid and a JSON sidecar "
        "(docs/predict.md).",
    )
    predict.add_argument("input", help="a volume file, a DICOM series folder, or a folder of scans")
    predict.add_argument("output", help="the label volume (.nii.gz, ...) or a folder (gets <scan>.nii.gz)")
    predict.add_argument("--method", required=True, help="a method of `segsam methods` (e.g. segsam, medsam_lite)")
    predict.add_argument(
        "--model",
        help="trained weights: a workflow results folder (default: results/), a checkpoint file, or an MLflow "
        "run id; zero-shot methods take none",
    )
    predict.add_argument("--config", action="append", default=[], metavar="FILE", help="config overlay (repeatable)")
    prompting = predict.add_mutually_exclusive_group()
    prompting.add_argument("--prompts", help="prompt file (.json / .csv), or a folder of <scan>.json / <scan>.csv")
    prompting.add_argument("--prompt-free", action="store_true", help="no prompts (prompt-free methods: unet, unetr)")
    predict.add_argument("--probabilities", action="store_true", help="also write <output>_prob_<class>.nii.gz")
    predict.add_argument(
        "--refine-boxes", action="store_true", help="tighten each plane's box from the neighbouring plane's mask"
    )
    predict.add_argument("--text", help="class text embeddings (class_embeddings.parquet) for methods with T2VSE")
    predict.add_argument("--modality", choices=("auto", "ct", "mr"), default="auto", help="intensity normalisation")
    predict.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    predict.add_argument("--device", default="cpu", help="cpu, cuda, or auto (CUDA when available)")


def run_predict(args: argparse.Namespace) -> None:
    """``segsam predict``: logging to stderr, then :func:`segsam.predict.run.predict`."""
    from segsam.config import load_config
    from segsam.logs import setup_logging
    from segsam.predict.run import PredictOptions, predict
    from segsam.runtime import keep_large_allocations

    setup_logging()
    keep_large_allocations()  # as every workflow job (segsam.errors.run_stage): planes allocate alike over and over
    predict(
        args.input,
        args.output,
        method=args.method,
        config=load_config(*args.config),
        model=args.model,
        prompts=args.prompts,
        prompt_free=args.prompt_free,
        options=PredictOptions(args.probabilities, args.refine_boxes, args.modality),
        text=args.text,
        threads=args.threads,
        device=args.device,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segsam", description="SEG-SAM reproduction workflow utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="print the method registry with parameter counts (Markdown)")
    check = sub.add_parser("check-config", help="validate the default config merged with overlays")
    check.add_argument("overlays", nargs="*")
    stand_in = sub.add_parser(
        "random-vit-b",
        help="write a random SAM ViT-B in the official layout (offline stand-in for sam_vit_b_01ec64.pth) and "
        "print its sha256",
    )
    stand_in.add_argument("path")
    stand_in.add_argument("--seed", type=int, default=0)
    accept = sub.add_parser(
        "accept-descriptions",
        help="after reading them, move LLM-written class descriptions into the reviewed description file",
    )
    accept.add_argument("classes", nargs="*", help="class names (default: every generated entry)")
    accept.add_argument("--generated", default=GENERATED_DESCRIPTIONS)
    accept.add_argument("--reviewed", default="config/descriptions/vocabulary_descriptions.json")
    add_predict_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            print(methods_table())
        elif args.command == "random-vit-b":
            from segsam.models.stand_in import write_random_sam_vit_b

            print(write_random_sam_vit_b(args.path, seed=args.seed))
        elif args.command == "accept-descriptions":
            from segsam.text.cache import accept_descriptions

            keys = accept_descriptions(args.generated, args.reviewed, args.classes or None)
            print(f"accepted {len(keys)} description(s) into {args.reviewed}: {', '.join(k.class_name for k in keys)}")
        elif args.command == "predict":
            run_predict(args)
        else:
            from segsam.config import config_hash, load_config

            print(f"config OK, hash {config_hash(load_config(*args.overlays))}")
    except SegsamError as err:
        print(f"segsam: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
