"""Training-step cost on CPU: from cached embeddings vs re-encoding every step (issue 6).

    .venv/bin/python benchmarks/train_step.py [--images 2] [--masks 1 5] [--threads 2] [--repeats 3]

For each method (ft_decoder, segsam) and masks-per-image setting, times one
optimiser step (box prompts) on cached embeddings, and the same step preceded
by a forward pass of the frozen LiteMedSAM encoder (what training without the
cache would do every step). Prints seconds per step, images/s and the speed-up
of the cache.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from segsam.config import load_config
from segsam.data.vocabulary import Vocabulary
from segsam.models.litemedsam import build_litemedsam
from segsam.models.weights import LITEMEDSAM_SHA256, resolve_weights
from segsam.train.loop import build_method_model


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
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--masks", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--methods", nargs="+", default=["ft_decoder", "segsam"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config()
    encoder = build_litemedsam(resolve_weights("litemedsam", LITEMEDSAM_SHA256)).image_encoder.eval()
    images = torch.rand(args.images, 3, 256, 256)
    with torch.inference_mode():
        cached = encoder(images)
    num_classes = len(Vocabulary.read(config["vocabulary"]))
    text = torch.randn(num_classes, 384)
    print(f"CPU threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}; images per step: {args.images}")
    for method in args.methods:
        model = build_method_model(method, config, text.shape[1]).train()
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for k in args.masks:
            n = args.images * k
            boxes = np.tile(np.array([[40, 50, 160, 170]], np.float32), (n, 1))
            points = np.zeros((n, 2), np.float32)
            is_point = np.zeros(n, bool)
            target = torch.zeros(n, 1, 256, 256)
            target[..., 50:170, 40:160] = 1
            classes = torch.zeros(n, dtype=torch.int64)
            presence = torch.zeros(n, num_classes)

            def step(embeddings: torch.Tensor) -> None:
                out = model(embeddings.repeat_interleave(k, dim=0), is_point, boxes, points, text)
                loss = model.loss(out, target, classes, presence, weights=config["loss"])["loss"]
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
                f"{method}, masks/image {k}: cached {t_cached:.3f} s/step ({args.images / t_cached:.2f} images/s); "
                f"re-encoding {t_encode:.3f} s/step ({args.images / t_encode:.2f} images/s); speed-up x{t_encode / t_cached:.1f}"
            )


if __name__ == "__main__":
    main()
