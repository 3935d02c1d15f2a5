"""Zero-shot LiteMedSAM on the real TotalSegmentator example CT, box prompts.

Every axial slice where an abdominal organ covers at least ``--min-area`` of
the slice is one case; the prompt is the label's bounding box plus a 1 px
margin. Each slice goes through the encoder once (in batches; embeddings are
kept per slice), then every organ on it is decoded. Prints the per-organ and
mean DSC, then the encoder's seconds per slice in fp32 and under bf16
autocast.

Run: ``python benchmarks/zero_shot_litemedsam.py`` (needs ``../shared/data``
beside the repository, or ``--data``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from segsam.models.litemedsam import build_litemedsam
from segsam.models.preprocess import prepare_image
from segsam.models.weights import LITEMEDSAM_SHA256, resolve_weights
from segsam.runtime import keep_large_allocations

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ORGANS = [
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "aorta",
    "inferior_vena_cava",
    "urinary_bladder",
]
WINDOW_HU = (-160.0, 240.0)


def load_case(data: Path) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Reads the CT (uint8 after windowing) and its labels, both z x y x x in LPS."""
    folder = data / "totalsegmentator"
    image = sitk.DICOMOrient(sitk.ReadImage(str(folder / "example_ct.nii.gz")), "LPS")
    labels = sitk.DICOMOrient(sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz")), "LPS")
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    low, high = WINDOW_HU
    ct = np.round((np.clip(hu, low, high) - low) / (high - low) * 255).astype(np.uint8)
    names = json.loads((folder / "labels_total.json").read_text())
    ids = {name: int(key) for key, name in names.items() if name in ORGANS}
    return ct, sitk.GetArrayFromImage(labels), ids


def box_with_margin(mask: np.ndarray, margin: int = 1) -> np.ndarray:
    """(x0, y0, x1, y1) of a binary mask, grown by ``margin`` and clipped to the slice."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return np.array(
        [
            max(cols.min() - margin, 0),
            max(rows.min() - margin, 0),
            min(cols.max() + margin, width - 1),
            min(rows.max() + margin, height - 1),
        ],
        dtype=np.float32,
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """DSC of two binary masks (1.0 when both are empty)."""
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, truth).sum() / total)


def encoder_seconds_per_slice(model: torch.nn.Module, images: torch.Tensor, bf16: bool) -> float:
    """Times the encoder on ``images`` one slice at a time, after one warm-up call."""
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), context:
        model.encode(images[:1])
        start = time.perf_counter()
        for image in images:
            model.encode(image[None])
    return (time.perf_counter() - start) / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--min-area", type=float, default=0.01, help="minimum organ area fraction per slice")
    parser.add_argument("--batch", type=int, default=2, help="encoder batch size")
    parser.add_argument("--timing-slices", type=int, default=8, help="slices timed per precision")
    args = parser.parse_args()
    keep_large_allocations()  # as every workflow stage does (segsam.errors.run_stage)
    if not (args.data / "totalsegmentator" / "example_ct.nii.gz").is_file():
        print(f"no data at {args.data}/totalsegmentator", file=sys.stderr)
        return 1

    ct, labels, ids = load_case(args.data)
    min_pixels = args.min_area * labels.shape[1] * labels.shape[2]
    cases = [
        (int(k), name)
        for name in ORGANS
        if name in ids
        for k in np.flatnonzero((labels == ids[name]).sum(axis=(1, 2)) >= min_pixels)
    ]
    slices = sorted({k for k, _ in cases})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CT {ct.shape} (z, y, x)")
    print(f"{len(cases)} masks on {len(slices)} axial slices (organ area >= {args.min_area:.1%})")

    model = build_litemedsam(resolve_weights("litemedsam", LITEMEDSAM_SHA256))
    prepared = {k: prepare_image(ct[k]) for k in slices}
    embeddings: dict[int, torch.Tensor] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(slices), args.batch):
            chunk = slices[i : i + args.batch]
            out = model.encode(torch.stack([prepared[k][0] for k in chunk]))
            embeddings.update(zip(chunk, out))
    encode_seconds = time.perf_counter() - start

    scores: dict[str, list[float]] = {name: [] for name in ORGANS}
    with torch.inference_mode():
        for k, name in cases:
            truth = labels[k] == ids[name]
            info = prepared[k][1]
            box = torch.from_numpy(info.box_to_model_coords(box_with_margin(truth)))[None]
            logits, _ = model.decode(embeddings[k][None], boxes=box)
            pred = torch.sigmoid(info.logits_to_original(logits[0, 0])).numpy() > 0.5
            scores[name].append(dice(pred, truth))

    print(f"{'organ':<20} {'n':>4} {'DSC':>6}")
    for name in ORGANS:
        if scores[name]:
            print(f"{name:<20} {len(scores[name]):>4} {np.mean(scores[name]):6.3f}")
        else:
            print(f"{name:<20} {0:>4} {'-':>6}")
    all_scores = [s for values in scores.values() for s in values]
    organ_means = [np.mean(v) for v in scores.values() if v]
    print(f"mean DSC over {len(all_scores)} masks: {np.mean(all_scores):.4f}")
    print(f"mean of organ means ({len(organ_means)} organs): {np.mean(organ_means):.4f}")
    print(f"encoder, batched (batch {args.batch}), fp32: {encode_seconds / len(slices):.3f} s/slice")

    timing = torch.stack([prepared[k][0] for k in slices[: args.timing_slices]])
    fp32 = encoder_seconds_per_slice(model, timing, bf16=False)
    bf16 = encoder_seconds_per_slice(model, timing, bf16=True)
    print(f"encoder, one slice per call, fp32: {fp32:.3f} s/slice ({len(timing)} slices)")
    print(f"encoder, one slice per call, bf16 autocast: {bf16:.3f} s/slice ({len(timing)} slices)")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
