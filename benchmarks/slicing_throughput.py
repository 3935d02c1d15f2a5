"""Slicing throughput and memory on the real TotalSegmentator example volumes (one core).

For each volume (the CT by default, ``--mr`` adds the MR), ``--repeat`` fresh
child processes, each pinned to one thread (SimpleITK, OpenMP, BLAS), measure:

* **read**: ``sitk.ReadImage`` of the image and the label alone (the I/O floor);
* **stage**: :func:`segsam.data.slicing.slice_case` end to end (read + checks +
  LPS + resampling + intensity + components + PNG writing + manifest), with the
  slicing section of the default config and ``--stride`` (1 = every slice, the
  paper's setting);
* **memory**: the peak resident set during the stage minus the resident set
  just before it (after a warm-up case on a crop of the same files, so that code
  and libraries are loaded), and, in a second pass (its bookkeeping would show in
  the RSS), tracemalloc's peak of Python/numpy allocations.
  Both are compared with the volume's in-memory size: voxels x 4 bytes (the
  float32 working copy of the image; the label adds voxels x 2 bytes).

Reports the medians over the children (and the worst memory): volumes/s and
planes/s per core, the ratio stage time / read time, and peak memory / volume
size (target <= 3). The stage fixes glibc's mmap threshold itself
(:func:`segsam.data.slicing.return_large_buffers`); ``--compare-allocator``
adds a run with that call disabled (glibc's dynamic threshold), to show what it
saves.

Run::

    python benchmarks/slicing_throughput.py [--data ../shared/data] [--stride 1] [--repeat 3] [--mr]
        [--compare-allocator]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "ct": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "totalseg_total.json"),
    "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "totalseg_total_mr.json"),
}


def _rss_now() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(modality: str, data: Path, stride: int, dynamic_threshold: bool) -> dict[str, float]:
    """Runs in a fresh process: one thread, a warm-up, then one measured read and stage."""
    import resource
    import time
    import tracemalloc

    import numpy as np
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    import segsam.data.slicing
    from segsam.config import load_config
    from segsam.data.slicing import slice_case

    if dynamic_threshold:  # what the stage would use without return_large_buffers()
        segsam.data.slicing.return_large_buffers = lambda: False
    from segsam.logs import setup_logging

    setup_logging(level=40)  # errors only: keep the timing free of log I/O
    image_name, label_name, labelmap = CASES[modality]
    image_path = data / "totalsegmentator" / image_name
    label_path = data / "totalsegmentator" / label_name
    slicing = {**load_config()["slicing"], "stride": {"x": stride, "y": stride, "z": stride}}
    common = dict(
        case="bench",
        modality=modality,
        dataset="bench",
        vocabulary_csv=REPO / "config" / "vocabulary.csv",
        labelmap_json=REPO / "config" / "labelmaps" / labelmap,
        slicing=slicing,
    )
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up on a small crop of the same data: loads every code path and library
        image = sitk.ReadImage(str(image_path))
        size = image.GetSize()
        small_image, small_label = Path(tmp) / "s.nii.gz", Path(tmp) / "s_seg.nii.gz"
        sitk.WriteImage(image[:32, :32, :16], str(small_image))
        sitk.WriteImage(sitk.ReadImage(str(label_path))[:32, :32, :16], str(small_label))
        del image
        slice_case(small_image, small_label, Path(tmp) / "warm", **common)

        rss_before = _rss_now()
        start = time.perf_counter()
        manifest = slice_case(image_path, label_path, Path(tmp) / "out", **common)
        stage_s = time.perf_counter() - start
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # tracemalloc in a second pass: its own bookkeeping would otherwise show in the RSS
        tracemalloc.start()
        slice_case(image_path, label_path, Path(tmp) / "out2", **common)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        start = time.perf_counter()
        sitk.ReadImage(str(image_path))
        sitk.ReadImage(str(label_path))
        read_s = time.perf_counter() - start
    voxels = int(np.prod(size))
    return {
        "modality": modality,
        "size_xyz": list(size),
        "voxels": voxels,
        "read_s": read_s,
        "stage_s": stage_s,
        "planes": sum(len(range(0, n, stride)) for n in size),
        "slices_written": int(manifest["image"].nunique()),
        "masks_written": len(manifest),
        "volume_mb": voxels * 4 / 2**20,
        "rss_peak_delta_mb": (rss_peak - rss_before) / 2**20,
        "tracemalloc_peak_mb": traced_peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--stride", type=int, default=1, help="slice every n-th plane on each axis (1 = paper)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mr", action="store_true", help="also the MR volume")
    parser.add_argument("--compare-allocator", action="store_true", help="also run without the stage's mmap threshold")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dynamic-threshold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data.resolve(), args.stride, args.dynamic_threshold)))
        return
    if not (args.data / "totalsegmentator").is_dir():
        sys.exit(f"{args.data}: real data not found (pass --data)")
    base_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
    }
    # the stage as shipped (fixed 1 MB mmap threshold), and optionally glibc's dynamic threshold,
    # which keeps freed volume-sized buffers in the heap after the first large free
    allocators = {"stage (fixed 1 MB mmap threshold)": []}
    if args.compare_allocator:
        allocators["glibc dynamic threshold"] = ["--dynamic-threshold"]
    for modality, (allocator, extra) in [
        (m, a) for m in (["ct", "mr"] if args.mr else ["ct"]) for a in allocators.items()
    ]:
        runs = []
        for _ in range(args.repeat):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                modality,
                "--data",
                str(args.data),
                "--stride",
                str(args.stride),
                *extra,
            ]
            out = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", env=base_env, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        first = runs[0]
        read_s = statistics.median(r["read_s"] for r in runs)
        stage_s = statistics.median(r["stage_s"] for r in runs)
        rss = statistics.median(r["rss_peak_delta_mb"] for r in runs)
        rss_max = max(r["rss_peak_delta_mb"] for r in runs)
        traced = statistics.median(r["tracemalloc_peak_mb"] for r in runs)
        volume = first["volume_mb"]
        result = {
            **{
                k: first[k]
                for k in ("modality", "size_xyz", "voxels", "planes", "slices_written", "masks_written", "volume_mb")
            },
            "allocator": allocator,
            "repeat": args.repeat,
            "stride": args.stride,
            "read_s": read_s,
            "stage_s": stage_s,
            "stage_over_read": stage_s / read_s,
            "volumes_per_s": 1 / stage_s,
            "planes_per_s": first["planes"] / stage_s,
            "rss_peak_delta_mb": rss,
            "rss_peak_delta_mb_max": rss_max,
            "rss_ratio": rss / volume,
            "rss_ratio_max": rss_max / volume,
            "tracemalloc_peak_mb": traced,
            "tracemalloc_ratio": traced / volume,
        }
        print(
            f"{modality} [{allocator}]: {first['size_xyz']} voxels, stride {args.stride}, median of "
            f"{args.repeat} processes: "
            f"read {read_s * 1000:.0f} ms, stage {stage_s:.2f} s (= {result['stage_over_read']:.0f} x read) -> "
            f"{result['volumes_per_s']:.2f} volumes/s, {result['planes_per_s']:.0f} planes/s per core "
            f"({first['slices_written']} slices, {first['masks_written']} masks written); peak memory {rss:.1f} MB RSS "
            f"= {result['rss_ratio']:.2f} x the {volume:.1f} MB float32 volume (worst {result['rss_ratio_max']:.2f} x; "
            f"tracemalloc {traced:.1f} MB = {result['tracemalloc_ratio']:.2f} x)"
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
