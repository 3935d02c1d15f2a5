"""PG-SAM's CPU cost: its extra inference time over SAM's decoder per slice, and training images/s.

    .venv/bin/python benchmarks/pg_sam.py [--threads 2] [--repeats 5] [--batch 2] [--vit-b]

On the frozen LiteMedSAM encoder's cached 64 x 64 embedding (the encoder is
the same for both sides and left out), with C = the vocabulary's classes and
384-d class text:

* **inference per slice**: each PG-SAM variant (``pg_sam``, ``pg_sam_no_text``,
  ``pg_sam_no_mlff``, ``pg_sam_k1``) segmenting every class of one slice,
  against SAM's prompt encoder + mask decoder decoding one box (``ft_decoder``'s
  model): the extra cost is the difference. SAM's decoder segments one object
  per prompt, so a slice with n objects costs it n of those; the breakdown
  gives PG-SAM's parts (aligner, fusion, one decoder round, mask optimiser);
* **training**: images/s of one optimiser step (Adam, the trainer's loss) on a
  batch of cached embeddings, per variant; ``--vit-b`` adds ``pg_sam_vit_b``
  (SAM ViT-B + LoRA, random weights, the images encoded in the step).

Each figure is the minimum over ``--repeats`` runs after one warm-up; the
variants are timed in turn within each repeat, so that machine load hits them
alike. On a shared machine, quote the load average printed first, or use
``--clock cpu`` (CPU seconds of this process, summed over its threads: not
lengthened by waiting for a core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segsam.config import load_config  # noqa: E402
from segsam.data.vocabulary import Vocabulary  # noqa: E402
from segsam.methods import get_method  # noqa: E402
from segsam.models.build import build_model  # noqa: E402
from segsam.models.losses import PromptFreeLoss  # noqa: E402
from segsam.runtime import keep_large_allocations  # noqa: E402
from segsam.train.loop import make_optimiser  # noqa: E402

VARIANTS = ("pg_sam", "pg_sam_no_text", "pg_sam_no_mlff", "pg_sam_k1")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def interleaved_minima(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum seconds of each function over ``repeats`` rounds (one warm-up call each), timed in turn."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return {name: min(values) for name, values in times.items()}


def _model(name: str, num_classes: int, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = get_method(name)
    return build_model(
        spec, encoder_weights=None, num_classes=num_classes, text_dim=384 if spec.needs_text else None, **kwargs
    )


def inference(num_classes: int, repeats: int) -> None:
    """Seconds per slice: PG-SAM's variants and their parts against SAM's decoder on one box."""
    embedding = torch.randn(1, 256, 64, 64)
    text = torch.randn(num_classes, 384)
    sam = _model("ft_decoder", num_classes, with_image_encoder=False)
    box = (np.array([False]), np.array([[60.0, 70.0, 180.0, 200.0]], np.float32), np.zeros((1, 2), np.float32))
    models = {name: _model(name, num_classes, with_image_encoder=False) for name in VARIANTS}
    full = models["pg_sam"]
    pe = full.semantic_decoder.dense_pe()
    with torch.inference_mode():
        priors = full.prior_aligner(embedding, pe, text)
        fused = full.level_fusion(embedding)
        logits = full.semantic_decoder(embedding, pe, priors.sparse, priors.dense, None, fused)
        fns: dict[str, Callable[[], object]] = {"SAM decoder, 1 box": lambda: sam(embedding, *box)}
        fns |= {name: (lambda m=model: m(embedding, text)) for name, model in models.items()}
        fns |= {
            "  prior aligner": lambda: full.prior_aligner(embedding, pe, text),
            "  multi-level fusion": lambda: full.level_fusion(embedding),
            "  one decoder round": lambda: full.semantic_decoder(
                embedding, pe, priors.sparse, priors.dense, None, fused
            ),
            "  mask optimiser (per extra round)": lambda: full.mask_optimiser(logits, embedding),
        }
        seconds = interleaved_minima(fns, repeats)
    base = seconds["SAM decoder, 1 box"]
    print(f"\nInference per slice (cached embedding, C = {num_classes}), minimum of {repeats}:")
    print("| Model | ms / slice | extra over SAM's decoder (1 box) |\n|---|---:|---:|")
    for name, value in seconds.items():
        extra = "" if name.startswith("  ") or name.startswith("SAM") else f"{1000 * (value - base):+,.0f} ms"
        print(f"| {name} | {1000 * value:,.1f} | {extra} |")


def _labels(batch: int) -> torch.Tensor:
    labels = torch.zeros(batch, 256, 256, dtype=torch.long)
    labels[:, 40:120, 60:150] = 1
    labels[:, 150:220, 100:200] = 3
    return labels


def training(names: list[str], num_classes: int, batch: int, repeats: int) -> None:
    """Images/s of one optimiser step per variant (the trainer's Adam and loss)."""
    text = torch.randn(num_classes, 384)
    labels = _labels(batch)
    loss_fn = PromptFreeLoss(load_config()["loss"])
    fns: dict[str, Callable[[], object]] = {}
    for name in names:
        spec = get_method(name)
        model = _model(name, num_classes, with_image_encoder=not spec.encoder_frozen).train()
        optimiser = make_optimiser([p for p in model.parameters() if p.requires_grad], 1e-4)
        inputs = torch.randn(batch, 256, 64, 64) if spec.encoder_frozen else torch.rand(batch, 3, 256, 256)

        def step(model: torch.nn.Module = model, optimiser: torch.optim.Optimizer = optimiser, inputs=inputs) -> None:
            loss = loss_fn(model(inputs, text), labels)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        fns[name] = step
    seconds = interleaved_minima(fns, repeats)
    print(f"\nTraining step, batch {batch} (cached embeddings; ViT-B: images), minimum of {repeats}:")
    print("| Method | s / step | images / s |\n|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {batch / value:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="images per training step (the demo's micro-batch)")
    parser.add_argument("--vit-b", action="store_true", help="also time pg_sam_vit_b's training step (slow)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    global _clock
    _clock = CLOCKS[args.clock]
    kept = keep_large_allocations()
    torch.set_num_threads(args.threads)
    num_classes = len(Vocabulary.read(REPO / load_config()["vocabulary"]))
    print(
        f"CPU threads: {args.threads}; CPUs: {os.cpu_count()}; {args.clock} clock; load average at start: "
        f"{os.getloadavg()[0]:.2f}; large allocations kept: {kept}"
    )
    inference(num_classes, args.repeats)
    training([*VARIANTS, *(["pg_sam_vit_b"] if args.vit_b else [])], num_classes, args.batch, args.repeats)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
