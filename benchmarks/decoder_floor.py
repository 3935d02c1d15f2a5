"""Decoder floor vs the cached training step on CPU (issue 22's restated cache target).

    .venv/bin/python benchmarks/decoder_floor.py [--methods ft_decoder segsam] [--batch 8] [--masks 2]
        [--micro-batch N] [--objects 4] [--slice-size 256] [--threads 2] [--repeats 5] [--warmup 1]
        [--json out.json]

The target: a training step from the embedding cache costs at most 1.15 times
the *decoder floor*, the work no cache can remove.

* Floor: forward + backward + optimiser step of the trainable decoders alone,
  on B x 256 x 64 x 64 float32 embeddings already in memory, with the prompts
  and targets built once before timing (no I/O, no prompt drawing).
* Cached step: the work of one global batch of ``Trainer.step``, written
  against the public pieces it uses (so that it survives changes of the
  trainer's data path): the slices' mask PNGs read and resized into the model
  frame, prompts drawn (:func:`~segsam.train.batch.simulate_prompts`), then per
  micro-batch :meth:`~segsam.train.batch.PromptBatch.gather`, the embeddings
  read through :class:`~segsam.embed.store.EmbeddingStore` and
  forward/backward; then gradient clipping and the Adam step. Not included:
  MLflow's per-step metrics and the loss all-reduce (a no-op with one process).

Masks are read every step, as a streamed dataset does (today's trainer reads
them once at start-up, so for it that column is an upper bound). The cache is
generated in a temporary folder in the format :mod:`segsam.embed.encode`
writes (``<case>.npy``, N x 256 x 64 x 64 float16, beside ``<case>.parquet``
with ``row``, ``image``, ``height``, ``width``), split over two cases; one
mask PNG per object (``--objects`` per slice, ``--slice-size`` pixels square).
The files are freshly written, so they are read from the page cache.

Methods: LiteMedSAM (tiny_vit) methods with a frozen encoder, real weights.
Floor and cached step alternate repeat by repeat, so that machine load hits
both alike; medians over ``--repeats`` after ``--warmup`` unmeasured steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segsam.config import load_config
from segsam.data.io import read_png, write_png
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.methods import METHODS, get_method
from segsam.models.build import EMBEDDING_SIZE, IMAGE_SIZE
from segsam.models.losses import MethodLoss
from segsam.models.method_model import build_method_model
from segsam.models.preprocess import ResizeInfo
from segsam.runtime import keep_large_allocations
from segsam.train.batch import PromptBatch, PromptSet, TrainImage, simulate_prompts
from segsam.train.loop import make_optimiser

TARGET = 1.15
TEXT_DIM = 384  # width of the class text embeddings (all-MiniLM-L6-v2)
#: Promptable LiteMedSAM methods that train from the cache.
CACHED_METHODS = [
    name
    for name, spec in METHODS.items()
    if spec.trains and spec.encoder == "tiny_vit" and spec.encoder_frozen and spec.prompted
]
PARTS = ("store", "masks", "prompts", "gather", "compute")


@dataclass(frozen=True)
class SliceRecord:
    """One generated training slice: its cache key, its mask PNGs, their classes and the slice size."""

    image: str
    masks: tuple[str, ...]
    classes: np.ndarray
    height: int
    width: int


@dataclass(frozen=True)
class Settings:
    """What one global batch is: the trainer's ``train`` settings that shape a step."""

    masks_per_image: int
    micro_batch: int
    box_jitter_px: int
    point_fraction: float
    grad_clip: float | None
    lr: float


def _ellipse(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random filled ellipse (uint8 0/255) on a size x size slice, at least a few pixels wide."""
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    ry, rx = rng.uniform(0.04 * size, 0.2 * size, 2)
    yy, xx = np.mgrid[:size, :size]
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return (inside * 255).astype(np.uint8)


def write_cache(root: Path, n_images: int, objects: int, slice_size: int, num_classes: int) -> list[SliceRecord]:
    """Write a two-case embedding cache and the mask PNGs of ``n_images`` slices under ``root``.

    Returns:
        The slices, in cache order (case by case).
    """
    rng = np.random.default_rng(0)
    cache, side = root / "cache", EMBEDDING_SIZE["tiny_vit"]
    cache.mkdir(parents=True)
    records: list[SliceRecord] = []
    counts = [n_images - n_images // 2, n_images // 2]
    for case, count in zip(("case_a", "case_b"), counts):
        if not count:
            continue
        folder = root / "masks" / case
        folder.mkdir(parents=True)
        images = [str(root / "slices" / case / f"{k:03d}.png") for k in range(count)]
        embeddings = rng.standard_normal((count, 256, side, side), dtype=np.float32).astype(np.float16)
        np.save(cache / f"{case}.npy", embeddings)
        table = {
            "row": np.arange(count),
            "image": images,
            "height": [slice_size] * count,
            "width": [slice_size] * count,
        }
        pd.DataFrame(table).to_parquet(cache / f"{case}.parquet", index=False)
        for k, image in enumerate(images):
            classes = rng.choice(num_classes, size=objects, replace=False).astype(np.int64)
            paths = []
            for j in range(objects):
                path = folder / f"{k:03d}_{j}.png"
                write_png(path, _ellipse(slice_size, rng))
                paths.append(str(path))
            records.append(SliceRecord(image, tuple(paths), classes, slice_size, slice_size))
    return records


def read_items(records: list[SliceRecord]) -> list[TrainImage]:
    """The slices' masks read from their PNGs and resized into the 256 x 256 model frame."""
    items = []
    for record in records:
        info = ResizeInfo.for_shape(record.height, record.width, IMAGE_SIZE)
        masks = np.stack([read_png(path) > 0 for path in record.masks])
        items.append(TrainImage(image=record.image, masks=info.mask_to_model(masks), classes=record.classes))
    return items


def draw_prompts(items: list[TrainImage], settings: Settings, rng: np.random.Generator) -> list[PromptSet]:
    """Each slice's prompts, drawn as the trainer draws them."""
    return [
        simulate_prompts(item.masks, settings.masks_per_image, settings.box_jitter_px, settings.point_fraction, rng)
        for item in items
    ]


@dataclass
class Stopwatch:
    """Named laps of one step (seconds, summed over the laps of a name)."""

    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    last: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] += now - self.last
        self.last = now


@dataclass
class MethodBench:
    """One method's model, loss and optimiser, and the two ways of running its training step."""

    name: str
    model: torch.nn.Module
    loss: MethodLoss
    optimiser: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    text: torch.Tensor | None
    num_classes: int
    settings: Settings

    @classmethod
    def build(cls, name: str, config: dict, num_classes: int, settings: Settings) -> MethodBench:
        """The method as the trainer builds it (seeded, pretrained weights, Adam over what trains)."""
        spec = get_method(name)
        torch.manual_seed(0)
        model = build_method_model(spec, config, num_classes, TEXT_DIM).train()
        params = [p for p in model.parameters() if p.requires_grad]
        text = torch.randn(num_classes, TEXT_DIM) if spec.needs_text else None
        loss = MethodLoss.for_model(model, config["loss"])
        return cls(name, model, loss, make_optimiser(params, settings.lr), params, text, num_classes, settings)

    def gather(self, items: list[TrainImage], prompts: list[PromptSet]) -> PromptBatch:
        with_class_masks = "sawd_sem" in get_method(self.name).components
        return PromptBatch.gather(items, prompts, self.num_classes, with_class_masks=with_class_masks)

    def backward(self, embeddings: torch.Tensor, inputs: PromptBatch, n_global: int) -> None:
        """Forward and backward of one micro-batch, its mean loss scaled to the global batch (as the trainer)."""
        out = self.model(
            embeddings, inputs.is_point, inputs.boxes, inputs.points, self.text, image_index=inputs.image_index
        )
        losses = self.loss(out, inputs.targets, inputs.classes, inputs.presence, inputs.class_masks)
        (losses["loss"] * (len(inputs) / n_global)).backward()
        for value in losses.values():  # the trainer tallies every term
            float(value.detach())

    def update(self) -> None:
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        self.optimiser.step()

    def floor_step(self, chunks: list[tuple[torch.Tensor, PromptBatch]]) -> None:
        """The decoder floor: pre-built embeddings and prompts per micro-batch, compute only."""
        n_global = sum(len(inputs) for _, inputs in chunks)
        self.optimiser.zero_grad(set_to_none=True)
        for embeddings, inputs in chunks:
            self.backward(embeddings, inputs, n_global)
        self.update()

    def cached_step(self, records: list[SliceRecord], store: EmbeddingStore, rng: np.random.Generator) -> Stopwatch:
        """One global batch as the trainer runs it, lap by lap (see the module docstring)."""
        watch = Stopwatch()
        items = read_items(records)
        watch.lap("masks")
        prompts = draw_prompts(items, self.settings, rng)
        watch.lap("prompts")
        n_global = sum(len(p) for p in prompts)
        micro = self.settings.micro_batch
        self.optimiser.zero_grad(set_to_none=True)
        for first in range(0, len(items), micro):
            chunk = slice(first, first + micro)
            inputs = self.gather(items[chunk], prompts[chunk])
            watch.lap("gather")
            embeddings = store.get([item.image for item in items[chunk]])
            watch.lap("store")
            self.backward(embeddings, inputs, n_global)
            watch.lap("compute")
        self.update()
        watch.lap("compute")
        return watch


def measure(bench: MethodBench, records: list[SliceRecord], store: EmbeddingStore, args: argparse.Namespace) -> dict:
    """Floor and cached step of one method, alternating; medians over the repeats."""
    items = read_items(records)
    prompts = draw_prompts(items, bench.settings, np.random.default_rng(1))
    micro = bench.settings.micro_batch
    chunks = [
        (
            store.get([item.image for item in items[i : i + micro]]),
            bench.gather(items[i : i + micro], prompts[i : i + micro]),
        )
        for i in range(0, len(items), micro)
    ]
    rng = np.random.default_rng(0)
    floor: list[float] = []
    cached: list[float] = []
    parts: dict[str, list[float]] = {name: [] for name in PARTS}

    def run_floor() -> None:
        floor.append(_timed(lambda: bench.floor_step(chunks)))

    def run_cached() -> None:
        _cached(bench, records, store, rng, cached, parts)

    for repeat in range(args.warmup + args.repeats):
        for run in (run_floor, run_cached) if repeat % 2 == 0 else (run_cached, run_floor):
            run()
    floor, cached = floor[args.warmup :], cached[args.warmup :]
    parts = {name: values[args.warmup :] for name, values in parts.items()}
    row = {
        "method": bench.name,
        "images": len(records),
        "prompts": sum(len(p) for p in prompts),
        "floor_s": statistics.median(floor),
        "cached_s": statistics.median(cached),
    }
    row["ratio"] = row["cached_s"] / row["floor_s"]
    row.update({f"{name}_s": statistics.median(values) for name, values in parts.items()})
    return row


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cached(
    bench: MethodBench,
    records: list[SliceRecord],
    store: EmbeddingStore,
    rng: np.random.Generator,
    totals: list[float],
    parts: dict[str, list[float]],
) -> None:
    """Run one cached step; append its total and its laps."""
    start = time.perf_counter()
    watch = bench.cached_step(records, store, rng)
    totals.append(time.perf_counter() - start)
    for name in PARTS:
        parts[name].append(watch.parts.get(name, 0.0))


def print_table(rows: list[dict]) -> None:
    """The results as a markdown table, then the target check."""
    print(
        "| method | images/step | prompts/step | floor s/step | cached s/step | cached/floor | "
        "store read s | mask PNG read s | prompt draw s | gather s | compute s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['images']} | {r['prompts']} | {r['floor_s']:.3f} | {r['cached_s']:.3f} | "
            f"{r['ratio']:.3f} | {r['store_s']:.4f} | {r['masks_s']:.4f} | {r['prompts_s']:.4f} | "
            f"{r['gather_s']:.4f} | {r['compute_s']:.3f} |"
        )
    for r in rows:
        verdict = "met" if r["ratio"] <= TARGET else "NOT met"
        extra = r["cached_s"] - r["floor_s"]
        print(
            f"{r['method']}: cached/floor {r['ratio']:.3f} (target <= {TARGET}): {verdict}; extra {extra:+.3f} s/step"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["ft_decoder", "segsam"], choices=CACHED_METHODS)
    parser.add_argument("--batch", type=int, default=8, help="images per step (the global batch, one process)")
    parser.add_argument("--masks", type=int, default=2, help="masks (prompts) per image")
    parser.add_argument("--micro-batch", type=int, default=None, help="images per forward pass (default: config)")
    parser.add_argument("--objects", type=int, default=4, help="mask PNGs per slice")
    parser.add_argument("--slice-size", type=int, default=256, help="side of the generated slices and masks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if min(args.batch, args.masks, args.objects, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--batch, --masks, --objects, --repeats and --threads must be positive, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kept = keep_large_allocations()  # as every workflow stage does
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # the config's relative paths (vocabulary)
    config = load_config()
    train = config["train"]
    settings = Settings(
        masks_per_image=args.masks,
        micro_batch=min(args.batch, args.micro_batch or int(train["micro_batch"])),
        box_jitter_px=int(train["box_jitter_px"]),
        point_fraction=float(train["point_fraction"]),
        grad_clip=float(train["grad_clip"]) if train["grad_clip"] else None,
        lr=float(train["lr"]),
    )
    num_classes = len(Vocabulary.from_config(config))
    print(
        f"CPU threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}; images per step: {args.batch}; "
        f"masks per image: {args.masks}; micro-batch: {settings.micro_batch}; mask PNGs per slice: {args.objects} "
        f"({args.slice_size} x {args.slice_size}); repeats: {args.repeats} after {args.warmup} warm-up; "
        f"large allocations kept: {kept}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="segsam-floor-") as tmp:
        records = write_cache(Path(tmp), args.batch, args.objects, args.slice_size, num_classes)
        store = EmbeddingStore.open(Path(tmp) / "cache", ["case_a", "case_b"][: min(2, args.batch)])
        for method in args.methods:
            rows.append(measure(MethodBench.build(method, config, num_classes, settings), records, store, args))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
