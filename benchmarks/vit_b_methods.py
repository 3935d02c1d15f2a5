"""Training-step cost of each SAM ViT-B method on CPU (issues 4 and 6: images/s per method).

    .venv/bin/python benchmarks/vit_b_methods.py [--methods sam_med2d medsam ...] [--images 2] [--masks 5]
        [--threads 2] [--repeats 2]

For each ViT-B method that trains, times one optimiser step (box prompts,
``--masks`` per image) the way ``segsam.train.loop`` runs it: from cached
16 x 16 embeddings when the encoder is frozen (FT-SAM), or from the images
through the encoder inside the forward pass when adapters or the encoder train
(SAM-Med2D, MedSAM, Med-SA). Prints seconds per step, images/s and the
trainable parameter count. No ViT-B weights exist here, so the models have
random weights: the cost of a step does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from segsam.config import load_config
from segsam.data.vocabulary import Vocabulary
from segsam.methods import METHODS
from segsam.models.build import build_model, parameter_counts
from segsam.models.losses import MethodLoss
from segsam.runtime import keep_large_allocations
from segsam.train.loop import make_optimiser

TRAINED_VIT_B = [name for name, spec in METHODS.items() if spec.encoder == "vit_b" and spec.trains]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=TRAINED_VIT_B, choices=TRAINED_VIT_B)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--masks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    keep_large_allocations()  # as every workflow stage does (segsam.errors.run_stage)
    torch.set_num_threads(args.threads)
    config = load_config()
    num_classes = len(Vocabulary.read(config["vocabulary"]))
    n = args.images * args.masks
    boxes = np.tile(np.array([[40, 50, 160, 170]], np.float32), (n, 1))
    points, is_point = np.zeros((n, 2), np.float32), np.zeros(n, bool)
    target = torch.zeros(n, 1, 256, 256)
    target[..., 50:170, 40:160] = 1
    classes, presence = torch.zeros(n, dtype=torch.int64), torch.zeros(n, num_classes)
    images = torch.randn(args.images, 3, 256, 256)
    index = torch.arange(args.images).repeat_interleave(args.masks)
    print(
        f"CPU threads: {args.threads}; load average: {os.getloadavg()[0]:.2f}; "
        f"images per step: {args.images}; masks per image: {args.masks}"
    )
    for method in args.methods:
        torch.manual_seed(0)
        spec = METHODS[method]
        model = build_model(
            spec,
            encoder_weights=None,
            num_classes=num_classes,
            text_dim=None,
            with_image_encoder=not spec.encoder_frozen,
        ).train()
        trainable, _ = parameter_counts(model)
        optimiser = make_optimiser([p for p in model.parameters() if p.requires_grad], 1e-4)
        loss_fn = MethodLoss.for_model(model, config["loss"])  # built once, as training does
        cached = torch.randn(args.images, 256, 16, 16)  # one embedding per image, as training reads them

        def step() -> None:
            source = cached if spec.encoder_frozen else images
            out = model(source, is_point, boxes, points, image_index=index)
            loss = loss_fn(out, target, classes, presence)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        step()  # warm-up (allocates Adam's state)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        best = min(times)
        source = "cached embeddings" if spec.encoder_frozen else "images (encoder in the step)"
        print(
            f"{method:16s} from {source:29s} {best:7.2f} s/step  {args.images / best:6.2f} images/s  "
            f"trainable {trainable:,}"
        )


if __name__ == "__main__":
    main()
