"""Embedding stage on CPU: seconds per slice and peak memory by encoder batch size and malloc setting.

    .venv/bin/python benchmarks/embed_memory.py [--batches 1 2 4] [--slices 8] [--threads 1]

Each (batch size, malloc setting) runs in a fresh child process, so that the
peak resident set and glibc's setting are its own. The child builds the
LiteMedSAM encoder (real weights), encodes ``--slices`` random 256 x 256
slices ``batch`` at a time under ``torch.inference_mode`` as rule
``embed_images`` does, after one warm-up batch, and reports seconds per slice
and its peak RSS. "kept" is :func:`segsam.runtime.keep_large_allocations`
(what every workflow stage runs with); "glibc" leaves malloc as it is.
``--threads 1`` is the rule's own setting (``threads: 1``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
from segsam.runtime import keep_large_allocations
batch, slices, threads, kept = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "kept"
if kept:
    keep_large_allocations()
torch.set_num_threads(threads)
from segsam.models.litemedsam import build_litemedsam
from segsam.models.weights import LITEMEDSAM_SHA256, resolve_weights
encoder = build_litemedsam(resolve_weights("litemedsam", LITEMEDSAM_SHA256)).image_encoder.eval()
images = torch.rand(batch, 3, 256, 256)
with torch.inference_mode():
    encoder(images)  # warm-up
    start = time.perf_counter()
    for _ in range(max(1, slices // batch)):
        encoder(images)
    seconds = (time.perf_counter() - start) / (max(1, slices // batch) * batch)
print(json.dumps({"s_per_slice": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"LiteMedSAM encoder, {args.slices} slices per run, {args.threads} thread(s)")
    print(f"{'batch':>5}  {'malloc':6}  {'s/slice':>7}  {'peak MB':>7}")
    for batch in args.batches:
        for mode in ("glibc", "kept"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(batch), str(args.slices), str(args.threads), mode],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"{batch:>5}  {mode:6}  {result['s_per_slice']:7.2f}  {result['peak_mb']:7.0f}")


if __name__ == "__main__":
    main()
