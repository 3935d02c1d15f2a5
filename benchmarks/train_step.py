"""Training-step cost on CPU: from cached embeddings vs re-encoding every step (issue 6).

    .venv/bin/python benchmarks/train_step.py [--images 2] [--masks 1 5] [--threads 2] [--repeats 3]

For each masks-per-image setting, times one optimiser step of the fine-tuned
decoder (prompt encoder + SAM mask decoder, box prompts) on cached embeddings,
and the same step preceded by a forward pass of the frozen LiteMedSAM encoder
(what training without the cache would do every step). Prints seconds per step,
images/s and the speed-up of the cache.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from segsam.config import load_config
from segsam.models.litemedsam import build_litemedsam
from segsam.models.weights import LITEMEDSAM_SHA256, resolve_weights
from segsam.train.loop import SagdLoss, decode_prompts


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_config()
    model = build_litemedsam(resolve_weights("litemedsam", LITEMEDSAM_SHA256))
    encoder = model.image_encoder.eval()
    for p in encoder.parameters():
        p.requires_grad = False
    params = [p for n, p in model.named_parameters() if n.startswith(("prompt_encoder", "mask_decoder"))]
    optimiser = torch.optim.Adam(params, lr=1e-4)
    criterion = SagdLoss()
    images = torch.rand(args.images, 3, 256, 256)
    with torch.inference_mode():
        cached = encoder(images)
    print(f"CPU threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}; images per step: {args.images}")
    for k in args.masks:
        n = args.images * k
        boxes = np.tile(np.array([[40, 50, 160, 170]], np.float32), (n, 1))
        points = np.zeros((n, 2), np.float32)
        is_point = np.zeros(n, bool)
        target = torch.zeros(n, 1, 256, 256)
        target[..., 50:170, 40:160] = 1

        def step(embeddings: torch.Tensor) -> None:
            logits, iou = decode_prompts(model, embeddings.repeat_interleave(k, dim=0), is_point, boxes, points)
            loss = criterion(logits, iou, target)["loss"]
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
            f"masks/image {k}: cached {t_cached:.3f} s/step ({args.images / t_cached:.2f} images/s); "
            f"re-encoding {t_encode:.3f} s/step ({args.images / t_encode:.2f} images/s); speed-up x{t_encode / t_cached:.1f}"
        )


if __name__ == "__main__":
    main()
