"""``segsam`` console entry point.

    segsam methods            # trainable / frozen parameter counts per method (Markdown)
    segsam check-config FILE  # validate config/config.yaml + FILE overlays, print the config hash
"""

from __future__ import annotations

import argparse
import sys

from segsam.errors import SegsamError


def methods_table() -> str:
    """Markdown table of the registered methods with their parameter counts."""
    from segsam.models.litemedsam import build_litemedsam
    from segsam.models.methods import METHODS, parameter_counts, set_trainable

    lines = [
        "| Method | Table row | Trains | Trainable params | Frozen params | What trains |",
        "|---|---|---|---:|---:|---|",
    ]
    for spec in METHODS.values():
        model = build_litemedsam(None)
        set_trainable(model, spec)
        trainable, frozen = parameter_counts(model)
        lines.append(
            f"| `{spec.name}` | {spec.display} | {'yes' if spec.trains else 'no'} | {trainable:,} | {frozen:,} | "
            f"{', '.join(spec.trainable) or '—'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segsam", description="SEG-SAM reproduction workflow utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="print the method registry with parameter counts (Markdown)")
    check = sub.add_parser("check-config", help="validate the default config merged with overlays")
    check.add_argument("overlays", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            print(methods_table())
        else:
            from segsam.config import config_hash, load_config

            print(f"config OK, hash {config_hash(load_config(*args.overlays))}")
    except SegsamError as err:
        print(f"segsam: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
