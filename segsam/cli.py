"""``segsam`` console entry point.

segsam methods            # trainable / frozen parameter counts per method (Markdown)
segsam check-config FILE  # validate config/config.yaml + FILE overlays, print the config hash
segsam random-vit-b PATH  # a random SAM ViT-B in the official layout (offline stand-in), prints its sha256
segsam accept-descriptions [CLASS ...]  # move reviewed LLM descriptions into the committed file
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
        else:
            from segsam.config import config_hash, load_config

            print(f"config OK, hash {config_hash(load_config(*args.overlays))}")
    except SegsamError as err:
        print(f"segsam: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
