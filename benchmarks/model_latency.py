"""Parameter counts and CPU latency per method at 256 x 256 input.

For every method of the registry (random weights: latency does not depend on
them) this prints

* trainable / frozen parameter counts (C classes, d_text-wide text embeddings);
* the image encoder's seconds per image (timed once per encoder variant:
  TinyViT, ViT-B, ViT-B + each adapter style);
* the decoders' seconds per prompt on a cached embedding (prompt encoder +
  SAGD [+ T2VSE] [+ SAWD], one box prompt), and for methods with SAWD also
  the binary-task path without SAWD (``semantic=False``);
* encoder + decoders per prompt (one prompt per image, the paper's inference).

Then the target check: SEG-SAM adds at most 15% to the time of
encoder + SAGD per prompt. The two sides are timed end to end (image in,
masks out), interleaved repeat by repeat so that machine load hits both
alike, and the ratio is given for the medians and for the minima (the minima
are the better estimate on a busy machine): ``segsam`` against ``ft_decoder`` (same frozen LiteMedSAM encoder), and
SEG-SAM on the paper's backbone (ViT-B + SAM-Med2D adapters) against
``sam_med2d``. Prompt-free networks are timed per image.

Run: ``python benchmarks/model_latency.py [--threads 2] [--repeats 5] [--json out.json]``.
On a machine that other jobs keep busy, wall-clock numbers are noise; use
``--threads 1 --clock cpu`` (CPU seconds of this process) instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segsam.methods import METHODS, MethodSpec, get_method  # noqa: E402
from segsam.models.build import build_model, parameter_counts, with_backbone  # noqa: E402
from segsam.runtime import keep_large_allocations

TARGET = 1.15
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = _clock()
        fn()
        times.append(_clock() - start)
    return statistics.median(times)


def _prompt() -> dict[str, torch.Tensor]:
    return {
        "is_point": torch.tensor([False]),
        "boxes": torch.tensor([[60.0, 70.0, 180.0, 200.0]]),
        "points": torch.zeros(1, 2),
    }


def _build(spec: MethodSpec, num_classes: int, text_dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(spec, encoder_weights=None, num_classes=num_classes, text_dim=text_dim).eval()


def _encoder_key(spec: MethodSpec) -> str:
    return spec.encoder + (f"+{spec.adapter}" if spec.adapter else "")


def time_methods(names: list[str], num_classes: int, text_dim: int, repeats: int) -> list[dict]:
    """Counts and latencies per method (encoder timed once per encoder variant)."""
    image = torch.rand(1, 3, 256, 256)
    text = torch.randn(num_classes, text_dim)
    encoder_times: dict[str, float] = {}
    rows = []
    for name in names:
        spec = get_method(name)
        model = _build(spec, num_classes, text_dim)
        trainable, frozen = parameter_counts(model)
        row = {"method": name, "encoder": spec.network or _encoder_key(spec), "trainable": trainable, "frozen": frozen}
        with torch.inference_mode():
            if spec.prompt_free:
                row["per_image_s"] = median_seconds(lambda: model(image), repeats)
            elif not spec.prompted:  # PG-SAM: every class of the image at once, encoder included
                row["per_image_s"] = median_seconds(lambda: model(image, text), repeats)
            else:
                key = _encoder_key(spec)
                if key not in encoder_times:
                    encoder_times[key] = median_seconds(lambda: model.encode(image), repeats)
                embedding = model.encode(image)
                prompt = _prompt()
                row["encoder_s"] = encoder_times[key]
                row["decoders_s"] = median_seconds(lambda: model(embedding, **prompt, text=text), repeats)
                if spec.has_sawd:
                    row["decoders_binary_s"] = median_seconds(
                        lambda: model(embedding, **prompt, text=text, semantic=False), repeats
                    )
                row["per_prompt_s"] = row["encoder_s"] + row["decoders_s"]
        rows.append(row)
        print(f"  {name}: {json.dumps({k: v for k, v in row.items() if k != 'method'})}", file=sys.stderr, flush=True)
        model = None  # free it before the next method is built
        gc.collect()
    return rows


def compare(base: MethodSpec, full: MethodSpec, num_classes: int, text_dim: int, repeats: int) -> dict:
    """End-to-end seconds per prompt (encode + decode one box), interleaved A/B."""
    image = torch.rand(1, 3, 256, 256)
    text = torch.randn(num_classes, text_dim)
    models = {"base": _build(base, num_classes, text_dim), "full": _build(full, num_classes, text_dim)}
    prompt = _prompt()
    times: dict[str, list[float]] = {"base": [], "full": [], "full_binary": []}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(model.encode(image), **prompt, text=text)
        for _ in range(repeats):
            for key, model, semantic in (
                ("base", models["base"], True),
                ("full", models["full"], True),
                ("full_binary", models["full"], False),
            ):
                start = _clock()
                model(model.encode(image), **prompt, text=text, semantic=semantic)
                times[key].append(_clock() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    return {
        "base": base.name,
        "full": full.name,
        "base_s": med["base"],
        "full_s": med["full"],
        "full_binary_s": med["full_binary"],
        "ratio": med["full"] / med["base"],
        "ratio_binary": med["full_binary"] / med["base"],
        "ratio_min": low["full"] / low["base"],
        "ratio_binary_min": low["full_binary"] / low["base"],
    }


def render(rows: list[dict], checks: list[dict], meta: dict) -> str:
    """Markdown report."""
    ms = lambda s: f"{1000 * s:,.0f}" if s is not None else "—"  # noqa: E731
    lines = [
        f"CPU latency at 256 x 256 ({meta['clock']} clock), {meta['threads']} threads, median of {meta['repeats']}; "
        f"C = {meta['num_classes']}, d_text = {meta['text_dim']}; load average at start {meta['load_start']}, "
        f"at end {meta['load_end']}.",
        "",
        "| Method | Encoder | Trainable params | Frozen params | Encoder ms / image | Decoders ms / prompt | "
        "Decoders w/o SAWD ms | Encoder + decoders ms / prompt |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "per_image_s" in r:
            lines.append(
                f"| `{r['method']}` | {r['encoder']} | {r['trainable']:,} | {r['frozen']:,} | — | — | — | "
                f"{ms(r['per_image_s'])} (per image, prompt-free) |"
            )
        else:
            lines.append(
                f"| `{r['method']}` | {r['encoder']} | {r['trainable']:,} | {r['frozen']:,} | {ms(r['encoder_s'])} | "
                f"{ms(r['decoders_s'])} | {ms(r.get('decoders_binary_s'))} | {ms(r['per_prompt_s'])} |"
            )
    lines += [
        "",
        f"Target: SEG-SAM adds at most {100 * (TARGET - 1):.0f}% to encoder + SAGD per prompt (end to end, "
        "interleaved).",
        "",
    ]
    lines += [
        "| Base | SEG-SAM | Base ms | SEG-SAM ms | Ratio (medians) | Ratio (minima) | Meets target | Binary "
        "path (no SAWD) ms | Ratio (medians / minima) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in checks:
        lines.append(
            f"| `{c['base']}` | `{c['full']}` | {ms(c['base_s'])} | {ms(c['full_s'])} | {c['ratio']:.3f} | "
            f"{c['ratio_min']:.3f} | "
            f"{'yes' if max(c['ratio'], c['ratio_min']) <= TARGET else 'NO'} | {ms(c['full_binary_s'])} | "
            f"{c['ratio_binary']:.3f} / {c['ratio_binary_min']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (with --threads 1, robust to other load on the machine)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=30)
    parser.add_argument("--text-dim", type=int, default=384)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--skip-table", action="store_true", help="only the target check")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    keep_large_allocations()  # as every workflow stage does (segsam.errors.run_stage)
    torch.set_num_threads(args.threads)
    meta = {
        "clock": args.clock,
        "threads": args.threads,
        "repeats": args.repeats,
        "num_classes": args.num_classes,
        "text_dim": args.text_dim,
        "load_start": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    rows = [] if args.skip_table else time_methods(args.methods, args.num_classes, args.text_dim, args.repeats)
    checks = [
        compare(get_method("ft_decoder"), get_method("segsam"), args.num_classes, args.text_dim, args.repeats),
        compare(
            get_method("sam_med2d"),
            with_backbone(get_method("segsam"), "vit_b", "sam_med2d"),
            args.num_classes,
            args.text_dim,
            args.repeats,
        ),
    ]
    meta["load_end"] = round(os.getloadavg()[0], 2)
    print(render(rows, checks, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "methods": rows, "checks": checks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
