"""Scale of the streamed training loader on a generated SA-Med2D-16M-style release.

    .venv/bin/python benchmarks/loader_scale.py [--slices 200000] [--root /tmp/sa_med2d_scale]
        [--sizes 50000 100000 200000] [--workers 0 1 2 4] [--images 384] [--out figures.json]

1. Writes a release of ``--slices`` slices (not committed; reused when present) in the release naming
   with ``SAMed2D_v1.json`` and the class-mapping json: 256 x 256 grey PNG slices with two masks
   each (liver, left kidney), hard links to a pool of 64 distinct image and mask files, so that
   200 k slices take seconds and little disk while every read still decodes a real PNG.
2. Imports it (:func:`segsam.data.sa_med2d.import_release`, without decoding masks for their area).
3. For each size in ``--sizes``, in a fresh process: the resident memory before and after building
   :class:`segsam.train.stream.TrainSlices` over that many training slices (flat in the number of
   slices is the target: nothing but paths and classes, in Arrow and numpy buffers).
4. For each worker count: images/s of :func:`segsam.train.stream.train_loader` delivering what the
   paper's step takes (each slice's masks in the model frame and its ViT-B input, 32 images per
   step), the number of workers one GPU needs at an assumed step rate (``--gpu-images-per-s``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

POOL = 64
SLICES_PER_CASE = 100


def _png(path: Path, array: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def _pool(root: Path) -> list[tuple[Path, Path, Path]]:
    """POOL distinct (image, liver mask, kidney mask) files the release links to."""
    rng = np.random.default_rng(0)
    pool_dir = root / "_pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(POOL):
        image = (rng.normal(100, 30, (256, 256)).clip(0, 255)).astype(np.uint8)
        y, x = rng.integers(20, 120, 2)
        liver = np.zeros((256, 256), np.uint8)
        liver[y : y + 80, x : x + 90] = 255
        kidney = np.zeros((256, 256), np.uint8)
        kidney[y + 100 : y + 130, x : x + 25] = 255
        paths = tuple(pool_dir / f"{name}_{k}.png" for name in ("image", "liver", "kidney"))
        for path, array in zip(paths, (image, liver, kidney)):
            _png(path, array)
        files.append(paths)
    return files


def write_release(root: Path, n_slices: int) -> Path:
    """The release (``root/SAMed2Dv1``) of ``n_slices`` slices, 100 per case; reused when complete."""
    release = root / "SAMed2Dv1"
    pairing = release / "SAMed2D_v1.json"
    if pairing.exists() and len(json.loads(pairing.read_text())) == n_slices:
        return release
    for sub in ("images", "masks"):
        (release / sub).mkdir(parents=True, exist_ok=True)
    pool = _pool(root)
    image_to_masks = {}
    for i in range(n_slices):
        case, k = divmod(i, SLICES_PER_CASE)
        stem = f"{'ct_00' if case % 2 else 'mr_t2'}--ScaleSet--case{case:05d}--z_{k:04d}"
        image, liver, kidney = pool[i % POOL]
        names = [f"masks/{stem}--0000_000.png", f"masks/{stem}--0001_000.png"]
        for source, name in ((image, f"images/{stem}.png"), (liver, names[0]), (kidney, names[1])):
            target = release / name
            if not target.exists():
                os.link(source, target)
        image_to_masks[f"SAMed2Dv1/images/{stem}.png"] = [f"SAMed2Dv1/{n}" for n in names]
    pairing.write_text(json.dumps(image_to_masks))
    (release / "SAMed2D_v1_class_mapping_id.json").write_text(json.dumps({"ScaleSet": {"liver": 0, "Left Kidney": 1}}))
    return release


def import_index(release: Path, out: Path) -> Path:
    """masks.parquet of the release (split by case), written once."""
    from segsam.data.sa_med2d import import_release

    masks_out = out / "masks.parquet"
    if masks_out.exists():
        return masks_out
    repo = Path(__file__).resolve().parents[1]
    start = time.perf_counter()
    masks, images, _ = import_release(
        release,
        image_to_masks=[("SAMed2D_v1.json", None)],
        class_mapping_json="SAMed2D_v1_class_mapping_id.json",
        vocabulary_csv=repo / "config" / "vocabulary.csv",
        classmap_json=repo / "config" / "classmaps" / "sa_med2d.json",
        measure_area=False,
        test_fraction=0.1,
    )
    out.mkdir(parents=True, exist_ok=True)
    masks.to_parquet(masks_out)
    print(f"imported {len(images)} slices, {len(masks)} masks in {time.perf_counter() - start:.1f} s")
    return masks_out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(masks_parquet: Path, n: int) -> dict[str, float]:
    """Resident memory before and after building the dataset over the first ``n`` training slices."""
    import pandas as pd

    from segsam.config import load_config
    from segsam.data.vocabulary import Vocabulary
    from segsam.train.stream import TrainSlices

    vocabulary = Vocabulary.from_config(load_config())
    table = pd.read_parquet(masks_parquet, columns=["image", "mask", "class_id", "height", "width", "split"])
    table = table[table["split"] == "train"]
    keep = sorted(table["image"].unique())[:n]
    table = table[table["image"].isin(set(keep))]
    before = _rss_mb()
    slices = TrainSlices(table, vocabulary, 256, pixels="vit_b")
    del table
    buffers = slices.images.nbytes + slices.mask_paths.nbytes + slices.classes.nbytes + slices.offsets.nbytes
    return {"slices": len(slices), "rss_before_mb": before, "rss_after_mb": _rss_mb(), "buffers_mb": buffers / 2**20}


def measure_loader(masks_parquet: Path, workers: int, images: int, batch: int) -> float:
    """Images/s the loader delivers (masks + ViT-B input) with ``workers`` worker processes."""
    import pandas as pd
    import torch

    from segsam.config import load_config
    from segsam.data.vocabulary import Vocabulary
    from segsam.train.stream import EpochShard, TrainSlices, train_loader

    torch.set_num_threads(1)
    table = pd.read_parquet(masks_parquet)
    slices = TrainSlices(table[table["split"] == "train"], Vocabulary.from_config(load_config()), 256, pixels="vit_b")
    order = np.random.default_rng(0).permutation(len(slices))[: images + 2 * batch].tolist()
    loader = iter(train_loader(slices, EpochShard(order, batch), workers, pin_memory=False))
    next(loader)  # workers started and warm
    start, seen = time.perf_counter(), 0
    while seen < images:
        seen += len(next(loader))
    return seen / (time.perf_counter() - start)


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/sa_med2d_scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 180_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--images", type=int, default=384, help="images timed per worker setting")
    parser.add_argument("--batch", type=int, default=32, help="images per step and GPU (the paper's 32)")
    parser.add_argument("--gpu-images-per-s", type=float, default=400.0, help="assumed step rate of one GPU")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loader", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    masks = args.root / "index" / "masks.parquet"
    if args.memory is not None:
        print(json.dumps(measure_memory(masks, args.memory)))
        return
    if args.loader is not None:
        print(json.dumps({"images_per_s": measure_loader(masks, args.loader, args.images, args.batch)}))
        return
    start = time.perf_counter()
    release = write_release(args.root, args.slices)
    print(f"release: {args.slices} slices at {release} ({time.perf_counter() - start:.1f} s)")
    import_index(release, args.root / "index")
    figures: dict = {"slices": args.slices, "memory": [], "loader": []}
    print("\n| train slices | RSS before (MB) | RSS after (MB) | dataset buffers (MB) | bytes per slice |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        m = _child(["--root", str(args.root), "--memory", str(n)])
        figures["memory"].append(m)
        grown = (m["rss_after_mb"] - m["rss_before_mb"]) * 2**20 / m["slices"]
        before, after = m["rss_before_mb"], m["rss_after_mb"]
        print(f"| {m['slices']} | {before:.0f} | {after:.0f} | {m['buffers_mb']:.1f} | {grown:.0f} |")
    print(f"\n| workers | images/s | per worker | workers for {args.gpu_images_per_s:g} images/s |")
    print("|---:|---:|---:|---:|")
    for w in args.workers:
        rate = _child(["--root", str(args.root), "--loader", str(w), "--images", str(args.images)])["images_per_s"]
        per = rate / max(w, 1)
        figures["loader"].append({"workers": w, "images_per_s": rate})
        print(f"| {w} | {rate:.1f} | {per:.1f} | {int(np.ceil(args.gpu_images_per_s / per))} |")
    print(f"\nCPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
