"""GPU check: bf16 training throughput and memory per method, the image encoder's MFU, the train rule.

    .venv/bin/python benchmarks/gpu_check.py [--methods ft_decoder segsam sam_med2d medsam pg_sam unet]
        [--images 32] [--masks 5] [--repeats 5] [--warmup 2] [--vit-batch 2 32] [--budget-s 420]
        [--skip-rule] [--out gpu_check.json]
    .venv/bin/python benchmarks/gpu_check.py --smoke [--with-rule]    # CPU, about a minute: the same code paths

Run it only on a machine with a GPU (never in CI; the CPU test runs ``--smoke``).
Sections, each under its share of ``--budget-s`` (the whole stays under 8 min):

1. Methods: one training step (bf16 autocast, Adam) at the paper's batch per
   GPU (32 images, 5 masks each: docs/methods.md#training-in-the-paper),
   images/s and peak GPU memory (``torch.cuda.max_memory_allocated``, reset
   per setting). Frozen-encoder methods are timed twice: ``cached`` (the
   embeddings in GPU memory, as the workflow trains) and ``encode every step``
   (the frozen encoder's forward pass on the images each step, the paper's
   cache-off setting). Methods whose encoder trains (adapters, MedSAM) and the
   prompt-free U-Net take the images. ViT-B methods load
   ``encoder.vit_b.weights`` when it exists and run with random weights
   otherwise (the output says which; the cost does not depend on the values).
2. Encoder: SAM ViT-B at 1024 and at 256 input, one forward + backward
   (every encoder parameter trains) in bf16: FLOPs counted with
   ``torch.utils.flop_counter.FlopCounterMode``, time with CUDA events, achieved
   TFLOP/s and MFU against the device's peak dense bf16 TFLOP/s
   (:data:`PEAK_BF16_TFLOPS`; an unknown device gives MFU n/a).
3. Rule: ``snakemake ... --set-resources train:gpu=1
   results/models/ft_decoder/checkpoint.pt`` on the phantom demo (config/tiny.yaml,
   methods [ft_decoder], one epoch) in a temporary copy of the workflow: wall
   time, whether the train log shows torchrun and NCCL. With one GPU the rule
   trains in-process (segsam.train.ddp.launch starts torchrun for 2+
   processes only), so a one-process torchrun NCCL all-reduce probe runs beside it.

``--smoke`` runs sections 1 and 2 on the CPU with 2 images, 1 mask, 1 step,
a small ViT instead of ViT-B, no peak lookup, and section 3 only with
``--with-rule``. The autocast context is entered as on the GPU but disabled
(float32): on CPUs without native bf16 (AVX2 only) bf16 convolutions run some
70 times slower and the smoke run would take minutes; ``--cpu-bf16`` turns it
on. The script exits 1 when any row failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segsam.config import encoder_settings, load_config
from segsam.data.vocabulary import Vocabulary
from segsam.methods import METHODS, MethodSpec, get_method
from segsam.models.build import EMBEDDING_SIZE, IMAGE_SIZE, build_image_encoder, build_model
from segsam.models.losses import MethodLoss, PromptFreeLoss
from segsam.models.method_model import build_method_model
from segsam.models.vit import VIT_B, ViTGeometry, build_sam_vit
from segsam.models.weights import WeightsError, resolve_weights
from segsam.runtime import keep_large_allocations
from segsam.train.loop import make_optimiser

#: Peak dense bf16 TFLOP/s by a part of ``torch.cuda.get_device_name()``, first match wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 SXM", 989.0),
    ("H100 80GB HBM3", 989.0),  # the SXM part's name
    ("A100", 312.0),
)
# segsam_vit_b is the paper's SEG-SAM (SAM ViT-B + SAM-Med2D adapters)
WANTED = ["ft_decoder", "segsam", "segsam_vit_b", "sam_med2d", "medsam", "pg_sam", "unet"]
DEFAULT_METHODS = [name for name in WANTED if name in METHODS]
SMOKE_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))
TEXT_DIM = 384  # class text embeddings (all-MiniLM-L6-v2)
SHARES = {"methods": 0.55, "encoder": 0.7, "rule": 1.0}  # cumulative share of the budget at each section's end


@dataclass
class Context:
    """What every section needs: device, sizes, config, the deadline."""

    device: torch.device
    smoke: bool
    images: int
    masks: int
    repeats: int
    warmup: int
    vit_batch: tuple[int, int]
    config: dict[str, Any]
    num_classes: int
    start: float
    budget_s: float
    bf16: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> torch.autocast:
        """bf16 autocast on this device (in the smoke run on the CPU, and only with ``--cpu-bf16``)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def section_end(self, section: str) -> float:
        """``time.monotonic()`` by which a section must be done."""
        return self.start + SHARES[section] * self.budget_s

    def geometry(self) -> ViTGeometry:
        """The ViT of ``vit_b`` methods: ViT-B at 256, or the small test ViT in the smoke run."""
        return SMOKE_VIT if self.smoke else VIT_B


def timed(ctx: Context, fn: Callable[[], object]) -> float:
    """Seconds of one call: CUDA events on a GPU, ``perf_counter`` on the CPU."""
    if not ctx.cuda:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000.0


def median_steps(ctx: Context, step: Callable[[], object], until: float) -> tuple[float, float | None]:
    """Median seconds per step after the warm-up (at least one timed step), and peak GiB since the start."""
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(ctx.warmup):
        step()
    times: list[float] = []
    while len(times) < ctx.repeats and (not times or time.monotonic() < until):
        times.append(timed(ctx, step))
    peak = torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None
    return statistics.median(times), peak


def release(ctx: Context) -> None:
    """Free what the last measurement left, so the next peak starts from it."""
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# --- section 1: methods ---------------------------------------------------------------------------


@dataclass
class Inputs:
    """One synthetic global batch on the device: images, label maps, prompts and their targets."""

    images: torch.Tensor  # B x 3 x S x S
    labels: torch.Tensor  # B x S x S long, 0 = background
    is_point: np.ndarray  # N bool
    boxes: np.ndarray  # N x 4
    points: np.ndarray  # N x 2
    targets: torch.Tensor  # N x 1 x S x S
    classes: torch.Tensor  # N long
    presence: torch.Tensor  # N x C
    image_index: torch.Tensor  # N long
    text: torch.Tensor  # C x TEXT_DIM

    @classmethod
    def make(cls, ctx: Context) -> Inputs:
        """B images with ``masks`` box or point prompts each (half of them points), on random boxes."""
        gen = np.random.default_rng(0)
        b, k, c, s = ctx.images, ctx.masks, ctx.num_classes, IMAGE_SIZE
        n = b * k
        x0, y0 = gen.integers(0, s // 2, n), gen.integers(0, s // 2, n)
        x1, y1 = x0 + gen.integers(16, s // 2, n), y0 + gen.integers(16, s // 2, n)
        boxes = np.stack([x0, y0, x1, y1], 1).astype(np.float32)
        targets = torch.zeros(n, 1, s, s)
        for i, (a, b_, c_, d) in enumerate(boxes.astype(int)):
            targets[i, 0, b_:d, a:c_] = 1
        labels = torch.zeros(b, s, s, dtype=torch.long)
        classes = torch.from_numpy(gen.integers(0, c, n))
        for i in range(n):
            labels[i // k][targets[i, 0] > 0] = int(classes[i]) + 1
        dev = ctx.device
        return cls(
            images=torch.rand(b, 3, s, s, device=dev),
            labels=labels.to(dev),
            is_point=np.arange(n) % 2 == 1,
            boxes=boxes,
            points=np.stack([(x0 + x1) / 2, (y0 + y1) / 2], 1).astype(np.float32),
            targets=targets.to(dev),
            classes=classes.to(dev),
            presence=torch.from_numpy((gen.random((n, c)) < 0.1).astype(np.float32)).to(dev),
            image_index=torch.arange(b).repeat_interleave(k).to(dev),
            text=torch.randn(c, TEXT_DIM, device=dev),
        )


def build_method(ctx: Context, spec: MethodSpec) -> tuple[torch.nn.Module, str]:
    """The method's model on the device in train mode, and where its weights came from."""
    torch.manual_seed(0)
    c = ctx.num_classes
    text_dim = TEXT_DIM if spec.needs_text else None
    if spec.prompt_free:
        model, weights = build_model(spec, encoder_weights=None, num_classes=c, text_dim=None), "random (from scratch)"
    elif ctx.smoke and spec.encoder == "vit_b":
        model = build_model(
            spec,
            encoder_weights=None,
            num_classes=c,
            text_dim=text_dim,
            vit_geometry=SMOKE_VIT,
            with_image_encoder=not spec.encoder_frozen,
        )
        weights = "random (smoke: small ViT)"
    else:
        try:
            model = build_method_model(spec, ctx.config, c, TEXT_DIM)
            weights = f"pretrained ({encoder_settings(ctx.config, spec.encoder)['weights']})"
        except WeightsError as error:
            model = build_model(
                spec, encoder_weights=None, num_classes=c, text_dim=text_dim, with_image_encoder=not spec.encoder_frozen
            )
            weights = "random (weights file absent)"
            ctx.notes.append(f"{spec.name}: random weights: {error}")
    return model.to(ctx.device).train(), weights


def frozen_encoder(ctx: Context, spec: MethodSpec) -> torch.nn.Module:
    """The frozen image encoder of a cached method, for the cache-off setting (random ViT when absent)."""
    if not (ctx.smoke and spec.encoder == "vit_b"):
        settings = encoder_settings(ctx.config, spec.encoder)
        try:
            encoder = build_image_encoder(spec.encoder, resolve_weights(settings["weights"], settings["sha256"]))
            return encoder.to(ctx.device)
        except WeightsError:
            pass
    encoder = build_sam_vit(ctx.geometry()).eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder.to(ctx.device)


def make_step(
    ctx: Context, spec: MethodSpec, model: torch.nn.Module, batch: Inputs, source: Callable[[], torch.Tensor]
) -> Callable[[], None]:
    """One optimiser step as the trainer runs it: forward in bf16 autocast, the loss outside, Adam."""
    optimiser = make_optimiser([p for p in model.parameters() if p.requires_grad], 1e-4)
    weights = ctx.config["loss"]
    loss_fn = MethodLoss.for_model(model, weights) if spec.prompted else PromptFreeLoss(weights)

    def step() -> None:
        x = source()
        with ctx.autocast():
            if spec.prompted:
                out = model(x, batch.is_point, batch.boxes, batch.points, batch.text, image_index=batch.image_index)
            else:
                out = model(x) if spec.prompt_free else model(x, text=batch.text)
        if spec.prompted:
            loss = loss_fn(out, batch.targets, batch.classes, batch.presence)["loss"]
        else:
            loss = loss_fn(out, batch.labels)["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def method_rows(ctx: Context, name: str, batch: Inputs, until: float) -> list[dict[str, Any]]:
    """The settings of one method: cached and encode-every-step, or images."""
    spec = get_method(name)
    model, weights = build_method(ctx, spec)
    base = {
        "method": name,
        "weights": weights,
        "images": ctx.images,
        "prompts": len(batch.is_point) if spec.prompted else 0,
    }
    settings: list[tuple[str, Callable[[], Callable[[], torch.Tensor]]]] = []
    if spec.encoder_frozen:
        side = ctx.geometry().embedding_size if spec.encoder == "vit_b" else EMBEDDING_SIZE[spec.encoder]
        settings.append(("cached", lambda: _cached_source(ctx, side)))
        settings.append(("encode every step", lambda: _encoding_source(ctx, spec, batch.images)))
    else:
        label = "images (prompt-free)" if spec.prompt_free else "images (encoder trains)"
        settings.append((label, lambda: lambda: batch.images))
    rows = []
    for setting, source in settings:
        row = {**base, "setting": setting}
        if time.monotonic() >= until:
            rows.append({**row, "status": "skipped (budget)"})
            continue
        try:
            seconds, peak = median_steps(ctx, make_step(ctx, spec, model, batch, source()), until)
            rows.append({**row, "s_per_step": seconds, "images_per_s": ctx.images / seconds, "peak_gib": peak})
            rows[-1]["status"] = "ok"
        except torch.cuda.OutOfMemoryError:
            rows.append({**row, "status": "error: out of GPU memory"})
        except Exception as error:  # the other setting may still run
            rows.append({**row, "status": f"error: {type(error).__name__}: {error}"})
        release(ctx)
    return rows


def _cached_source(ctx: Context, side: int) -> Callable[[], torch.Tensor]:
    """Embeddings already in device memory (float32, as the cache gives them): the same tensor every step."""
    embeddings = torch.randn(ctx.images, 256, side, side, device=ctx.device)
    return lambda: embeddings


def _encoding_source(ctx: Context, spec: MethodSpec, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The frozen encoder's forward pass on the images, every step (no gradients)."""
    encoder = frozen_encoder(ctx, spec)

    def encode() -> torch.Tensor:
        with torch.no_grad(), ctx.autocast():
            return encoder(images).float()

    return encode


def methods_section(ctx: Context, methods: list[str]) -> list[dict[str, Any]]:
    """Section 1 over the methods, each failure a row of its own."""
    end = ctx.section_end("methods")
    batch = Inputs.make(ctx)
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(methods):
        if time.monotonic() >= end:
            rows.append({"method": name, "setting": "-", "status": "skipped (budget)"})
            continue
        until = min(end, time.monotonic() + (end - time.monotonic()) / (len(methods) - i))
        try:
            rows += method_rows(ctx, name, batch, until)
        except Exception as error:  # a method that fails to build is a row, not the end of the check
            rows.append({"method": name, "setting": "-", "status": f"error: {type(error).__name__}: {error}"})
        release(ctx)
    return rows


# --- section 2: encoder TFLOP/s --------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense bf16 TFLOP/s from :data:`PEAK_BF16_TFLOPS`; None when unknown."""
    for part, peak in PEAK_BF16_TFLOPS:
        if part.lower() in device_name.lower():
            return peak
    return None


def encoder_row(ctx: Context, label: str, geometry: ViTGeometry, batch: int, peak: float | None) -> dict[str, Any]:
    """FLOPs and time of one forward + backward of a ViT (all parameters train) in bf16."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    encoder = build_sam_vit(geometry).to(ctx.device).train()
    images = torch.randn(batch, 3, geometry.image_size, geometry.image_size, device=ctx.device)

    def forward_backward() -> None:
        with ctx.autocast():
            out = encoder(images)
        out.float().square().mean().backward()
        encoder.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        forward_backward()
    flops = counter.get_total_flops()
    seconds, peak_gib = median_steps(ctx, forward_backward, ctx.section_end("encoder"))
    achieved = flops / seconds / 1e12
    return {
        "encoder": label,
        "input": geometry.image_size,
        "batch": batch,
        "tflop_per_step": flops / 1e12,
        "s_per_step": seconds,
        "tflops": achieved,
        "mfu": None if peak is None else achieved / peak,
        "peak_gib": peak_gib,
        "status": "ok",
    }


def encoder_section(ctx: Context) -> list[dict[str, Any]]:
    """Section 2: ViT-B at 1024 and at 256 (the small ViT at 512 and 256 in the smoke run)."""
    name = torch.cuda.get_device_name() if ctx.cuda else "cpu"
    peak = None if ctx.smoke else peak_tflops(name)
    if peak is None:
        reason = "smoke run: no peak lookup" if ctx.smoke else f"{name!r} is not in PEAK_BF16_TFLOPS"
        ctx.notes.append(f"MFU n/a: {reason}")
    base = ctx.geometry()
    big = replace(base, image_size=512 if ctx.smoke else 1024)
    label = "small ViT (smoke)" if ctx.smoke else "SAM ViT-B"
    rows = []
    for geometry, batch in ((big, ctx.vit_batch[0]), (base, ctx.vit_batch[1])):
        if time.monotonic() >= ctx.section_end("encoder"):
            rows.append({"encoder": label, "input": geometry.image_size, "batch": batch, "status": "skipped (budget)"})
            continue
        try:
            rows.append(encoder_row(ctx, label, geometry, batch, peak))
        except Exception as error:
            rows.append({"encoder": label, "input": geometry.image_size, "batch": batch, "status": f"error: {error}"})
        release(ctx)
    return rows


# --- section 3: the train rule through Snakemake ---------------------------------------------------


def run_group(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> tuple[int | None, str, float]:
    """Run ``cmd`` in its own process group; kill that group on timeout. Returns (rc or None, output, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        return proc.returncode, out, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, time.perf_counter() - start


def tiny_config(path: Path) -> None:
    """config/tiny.yaml (the phantom demo) with methods [ft_decoder] and one epoch, written to ``path``."""
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text(encoding="utf-8"))
    config["methods"] = ["ft_decoder"]
    config.setdefault("train", {})["epochs"] = 1
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow with its own ``segsam/`` (the Snakefile puts its folder first on the path)."""
    for name in ("Snakefile", "workflow", "config", "envs", "segsam"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def rule_section(ctx: Context) -> list[dict[str, Any]]:
    """Section 3: the train rule with one GPU in a temporary copy, then the NCCL probe."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NCCL_DEBUG": "INFO"}
    with tempfile.TemporaryDirectory(prefix="segsam-gpu-check-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        copy_workflow(work)
        tiny_config(Path(tmp) / "c.yaml")
        target = "results/models/ft_decoder/checkpoint.pt"
        cmd = [sys.executable, "-m", "snakemake", target, "--cores", "all", "--configfile", str(Path(tmp) / "c.yaml")]
        cmd += ["--set-resources", "train:gpu=1"]
        timeout = ctx.section_end("rule") - time.monotonic() - 60  # keep a minute for the probe
        rc, out, seconds = run_group(cmd, work, timeout, env)
        log_file = work / "results" / "logs" / "train" / "ft_decoder.log"
        log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
        text = out + log
        row = {
            "check": "snakemake train rule, train:gpu=1",
            "wall_s": seconds,
            "train_rule_s": _benchmark_seconds(work / "results" / "benchmarks" / "train" / "ft_decoder.tsv"),
            "status": "ok" if rc == 0 and (work / target).is_file() else f"error: exit {rc} (None: timed out)",
            "torchrun": "launching:" in log and "torch.distributed.run" in log,
            "nccl": "NCCL INFO" in text or "backend nccl" in text.lower(),
        }
        if rc != 0:
            row["tail"] = text[-1500:]
    if row["status"] == "ok" and not row["torchrun"]:
        ctx.notes.append(
            "train:gpu=1 trains in-process (segsam.train.ddp.launch starts torchrun for 2+ processes only), so the "
            "rule opens no process group; the probe row checks the backend (NCCL on a GPU) through torchrun"
        )
    return [row, nccl_probe(ctx, env)]


def _benchmark_seconds(tsv: Path) -> float | None:
    """The ``s`` column of a Snakemake benchmark file (the rule's own wall time); None when absent."""
    if not tsv.is_file():
        return None
    header, values = tsv.read_text(encoding="utf-8").splitlines()[:2]
    return float(dict(zip(header.split("\t"), values.split("\t")))["s"])


def nccl_probe(ctx: Context, env: dict[str, str]) -> dict[str, Any]:
    """A one-process torchrun job of this script (``--nccl-probe``): init the process group, all-reduce."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__]
    timeout = max(30.0, ctx.section_end("rule") - time.monotonic())
    rc, out, seconds = run_group([*cmd, "--nccl-probe"], REPO, timeout, env)
    line = next((x for x in out.splitlines() if x.startswith("probe:")), "")
    backend = "nccl" if ctx.cuda else "gloo"
    return {
        "check": f"torchrun 1 process, {backend} all_reduce",
        "wall_s": seconds,
        "status": "ok" if rc == 0 and line else f"error: exit {rc}: {out[-800:]}",
        "torchrun": True,
        "nccl": f"backend={backend}" in line and backend == "nccl",
    }


def probe_main() -> None:
    """Entry point of the probe's rank: NCCL on CUDA (gloo on CPU), one all-reduce."""
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    value = torch.ones(1, device="cuda" if cuda else "cpu")
    dist.all_reduce(value)
    print(f"probe: backend={dist.get_backend()} world={dist.get_world_size()} sum={float(value):.0f}", flush=True)
    dist.destroy_process_group()


# --- output ----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "/").replace("\n", " ")


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """One markdown table (missing cells blank)."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row[c]) if c in row else "" for c in columns) + " |")


METHOD_COLUMNS = ["method", "setting", "weights", "images", "prompts", "s_per_step", "images_per_s", "peak_gib"]
ENCODER_COLUMNS = ["encoder", "input", "batch", "tflop_per_step", "s_per_step", "tflops", "mfu", "peak_gib"]
RULE_COLUMNS = ["check", "wall_s", "train_rule_s", "torchrun", "nccl"]


def report(ctx: Context, results: dict[str, Any], out: Path | None) -> bool:
    """Print the tables and notes, write the JSON; True when no row failed."""
    precision = "bf16 autocast" if ctx.bf16 else "float32 (smoke)"
    print_table(f"Training step, {precision}", results["methods"], [*METHOD_COLUMNS, "status"])
    print_table(f"Image encoder forward + backward, {precision}", results["encoder"], [*ENCODER_COLUMNS, "status"])
    if results["rule"]:
        print_table("train rule (Snakemake) and torchrun", results["rule"], [*RULE_COLUMNS, "status"])
    for note in ctx.notes:
        print(f"note: {note}")
    if out is not None:
        out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    rows = [r for section in ("methods", "encoder", "rule") for r in results[section]]
    failed = [r for r in rows if str(r.get("status", "")).startswith("error")]
    print(f"\n{len(rows)} rows, {len(failed)} failed; {time.monotonic() - ctx.start:.0f} s in all")
    return not failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--images", type=int, default=32, help="images per step (the paper's per-GPU batch)")
    parser.add_argument("--masks", type=int, default=5, help="masks (prompts) per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--vit-batch", type=int, nargs=2, default=[2, 32], help="encoder batch at 1024 and at 256")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of the three sections")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-rule", action="store_true", help="leave out section 3")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the CPU test)")
    parser.add_argument("--with-rule", action="store_true", help="run section 3 in the smoke run too")
    parser.add_argument(
        "--cpu-bf16", action="store_true", help="bf16 autocast in the smoke run (minutes on CPUs without native bf16)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--nccl-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.masks, args.repeats, args.warmup, args.vit_batch = 2, 1, 1, 0, [1, 2]
        args.threads = args.threads or 2
    return args


def make_context(args: argparse.Namespace) -> Context:
    """The device (CUDA, or the CPU for ``--smoke``), config and sizes; exits 2 without a GPU."""
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; run with --smoke for the CPU check")
    os.chdir(REPO)  # the config's relative paths
    config = load_config()
    return Context(
        device=torch.device("cpu" if args.smoke else "cuda"),
        smoke=args.smoke,
        images=args.images,
        masks=args.masks,
        repeats=args.repeats,
        warmup=args.warmup,
        vit_batch=tuple(args.vit_batch),
        config=config,
        num_classes=len(Vocabulary.from_config(config)),
        start=time.monotonic(),
        budget_s=args.budget_s,
        bf16=not args.smoke or args.cpu_bf16,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nccl_probe:
        probe_main()
        return 0
    keep_large_allocations()
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = make_context(args)
    device = torch.cuda.get_device_name() if ctx.cuda else "cpu (smoke)"
    print(
        f"device: {device}; torch {torch.__version__}; images/step {ctx.images}, masks/image {ctx.masks}; "
        f"repeats {ctx.repeats} after {ctx.warmup} warm-up; budget {ctx.budget_s:.0f} s; "
        f"bf16 autocast: {'on' if ctx.bf16 else 'off (smoke: float32; --cpu-bf16 turns it on)'}"
    )
    vit_b = Path(encoder_settings(ctx.config, "vit_b")["weights"])
    print(f"ViT-B weights {vit_b}: {'found' if vit_b.is_file() else 'absent: ViT-B methods use random weights'}")
    results: dict[str, Any] = {"device": device, "smoke": ctx.smoke, "args": vars(args)}
    results["methods"] = methods_section(ctx, args.methods)
    results["encoder"] = encoder_section(ctx)
    run_rule = not args.skip_rule and (not args.smoke or args.with_rule)
    results["rule"] = rule_section(ctx) if run_rule else []
    results["notes"] = ctx.notes
    return 0 if report(ctx, results, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
