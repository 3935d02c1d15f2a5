"""Training-step cost on CPU: from cached embeddings vs re-encoding every step.

    .venv/bin/python benchmarks/train_step.py [--encoders tiny_vit vit_b] [--images 2] [--masks 1 5]
        [--threads 2] [--repeats 3]

For each frozen encoder, method (ft_decoder, segsam) and masks-per-image
setting, times one optimiser step (box prompts) on cached embeddings, and the
same step preceded by a forward pass of the frozen encoder (what training
without the cache would do every step). Prints seconds per step, images/s and
the speed-up of the cache.

Encoders: ``tiny_vit`` is LiteMedSAM (the demo's, real weights; 64 x 64
embeddings, so the decoder is the larger cost); ``vit_b`` is SAM ViT-B at 256
as in SAM-Med2D and the paper (16 x 16 embeddings). No ViT-B weights exist
here, so it runs with random weights: the cost of a forward pass does not
depend on the weight values.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from segsam.config import load_config
from segsam.data.vocabulary import Vocabulary
from segsam.methods import get_method
from segsam.models.build import build_model, with_backbone
from segsam.models.litemedsam import build_litemedsam
from segsam.models.losses import MethodLoss
from segsam.models.method_model import build_method_model
from segsam.models.segsam_net import PromptableModel
from segsam.models.vit import VIT_B, build_sam_vit
from segsam.models.weights import LITEMEDSAM_SHA256, resolve_weights
from segsam.runtime import keep_large_allocations
from segsam.train.loop import make_optimiser


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["tiny_vit", "vit_b"], choices=["tiny_vit", "vit_b"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--masks", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--methods", nargs="+", default=["ft_decoder", "segsam"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave malloc as glibc sets it (the workflow calls segsam.runtime.keep_large_allocations)",
    )
    args = parser.parse_args()
    kept = False if args.glibc_default else keep_large_allocations()
    torch.set_num_threads(args.threads)
    config = load_config()
    num_classes = len(Vocabulary.read(config["vocabulary"]))
    text = torch.randn(num_classes, 384)
    images = torch.rand(args.images, 3, 256, 256)
    print(
        f"CPU threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}; images per step: {args.images}; "
        f"large allocations kept: {kept}"
    )
    for encoder_name in args.encoders:
        torch.manual_seed(0)
        if encoder_name == "tiny_vit":
            encoder = build_litemedsam(resolve_weights("litemedsam", LITEMEDSAM_SHA256)).image_encoder.eval()
        else:
            encoder = build_sam_vit(VIT_B).eval()
        with torch.inference_mode():
            cached = encoder(images)
        for method in args.methods:
            measure(encoder_name, encoder, cached, images, method, config, text, num_classes, args)


def _model(encoder_name: str, method: str, config: dict, text_dim: int) -> PromptableModel:
    if encoder_name == "tiny_vit":
        return build_method_model(get_method(method), config, len(Vocabulary.read(config["vocabulary"])), text_dim)
    spec = with_backbone(get_method(method), "vit_b")
    return build_model(
        spec,
        encoder_weights=None,
        num_classes=len(Vocabulary.read(config["vocabulary"])),
        text_dim=text_dim if spec.has_t2vse else None,
        with_image_encoder=False,
    )


def measure(
    encoder_name: str,
    encoder: torch.nn.Module,
    cached: torch.Tensor,
    images: torch.Tensor,
    method: str,
    config: dict,
    text: torch.Tensor,
    num_classes: int,
    args: argparse.Namespace,
) -> None:
    """Time one optimiser step with and without the cache for each masks-per-image setting."""
    model = _model(encoder_name, method, config, text.shape[1]).train()
    optimiser = make_optimiser([p for p in model.parameters() if p.requires_grad], 1e-4)
    loss_fn = MethodLoss.for_model(model, config["loss"])  # built once, as training does
    for k in args.masks:
        n = args.images * k
        boxes = np.tile(np.array([[40, 50, 160, 170]], np.float32), (n, 1))
        points = np.zeros((n, 2), np.float32)
        is_point = np.zeros(n, bool)
        target = torch.zeros(n, 1, 256, 256)
        target[..., 50:170, 40:160] = 1
        classes = torch.zeros(n, dtype=torch.int64)
        presence = torch.zeros(n, num_classes)

        image_index = torch.arange(args.images).repeat_interleave(k)  # as training does: one embedding per image

        def step(embeddings: torch.Tensor) -> None:
            out = model(embeddings, is_point, boxes, points, text, image_index=image_index)
            loss = loss_fn(out, target, classes, presence)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        def reencode() -> None:
            with torch.no_grad():
                embeddings = encoder(images)
            step(embeddings)

        t_cached = best_of(lambda: step(cached.clone()), args.repeats)
        t_encode = best_of(reencode, args.repeats)
        print(
            f"{encoder_name} {method}, masks/image {k}: cached {t_cached:.3f} s/step "
            f"({args.images / t_cached:.2f} images/s); "
            f"re-encoding {t_encode:.3f} s/step ({args.images / t_encode:.2f} images/s); speed-up "
            f"x{t_encode / t_cached:.1f}"
        )


if __name__ == "__main__":
    main()
