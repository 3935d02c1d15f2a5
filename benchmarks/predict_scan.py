"""Seconds per scan and peak memory of ``segsam predict`` on a 512 x 512 x 100 CT with 5 boxed organs.

The scan is the real TotalSegmentator example CT resampled (linear) onto 512 x 512
in-plane and 100 axial planes over the same physical extent (0.71 x 0.59 x 3.36 mm,
so the prediction also resamples in-plane to square pixels); its label is resampled
(nearest) the same way, and each of 5 organs gets one 3D box (its voxels' tight box,
voxel frame). Each method runs as its own ``segsam predict`` process under GNU
``/usr/bin/time -v`` on ``--threads`` CPU threads: zero-shot LiteMedSAM always, and
SEG-SAM when ``--checkpoint`` (and ``--text``, its class text embeddings) are
given. Prints, per method: the process's wall seconds and peak RSS, the sidecar's
seconds (reading the scan to writing the outputs), the planes encoded, and the
3D DSC per organ.

Run: ``python benchmarks/predict_scan.py`` (needs ``../shared/data`` beside the
repository, or ``--data``); add ``--refine-boxes`` to time box refinement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segsam.data.vocabulary import LabelMap, Vocabulary

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "stomach")
SIZE = (512, 512, 100)


def resampled(image: sitk.Image, interpolator: int) -> sitk.Image:
    """``image`` on a SIZE grid covering the same physical extent (voxel faces to voxel faces)."""
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    spacing = extent / np.array(SIZE)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # the first voxel centre moves from half an old voxel to half a new voxel inside the corner
    shift = direction @ ((spacing - np.array(image.GetSpacing())) / 2)
    return sitk.Resample(
        image,
        SIZE,
        sitk.Transform(),
        interpolator,
        tuple(np.array(image.GetOrigin()) + shift),
        tuple(spacing),
        image.GetDirection(),
        0,
        image.GetPixelID(),
    )


def make_case(data: Path, folder: Path) -> tuple[Path, Path, np.ndarray, Vocabulary]:
    """Write the 512 x 512 x 100 CT and its 5 organ boxes; return them, the label (vocabulary ids), the vocabulary."""
    source = data / "totalsegmentator"
    ct = resampled(sitk.ReadImage(str(source / "example_ct.nii.gz")), sitk.sitkLinear)
    ct = sitk.Cast(ct, sitk.sitkInt16)
    labels = resampled(sitk.ReadImage(str(source / "example_seg_fast_force_split.nii.gz")), sitk.sitkNearestNeighbor)
    vocabulary = Vocabulary.read(REPO / "config" / "vocabulary.csv")
    values = sitk.GetArrayFromImage(labels)
    lut = LabelMap.read(REPO / "config" / "labelmaps" / "totalseg_total.json", vocabulary).lookup_table(
        np.unique(values), where="label"
    )
    label = lut[values]
    entries = []
    for name in ORGANS:
        z, y, x = np.nonzero(label == vocabulary.id_of(name))
        entries.append({"class": name, "box": [int(v) for v in (x.min(), y.min(), z.min(), x.max(), y.max(), z.max())]})
    scan = folder / "ct512.nii.gz"
    sitk.WriteImage(ct, str(scan))
    prompts = folder / "ct512.json"
    prompts.write_text(json.dumps({"frame": "voxel", "prompts": entries}), encoding="utf-8")
    return scan, prompts, label, vocabulary


def run_predict(command: list[str]) -> dict[str, float]:
    """Run one ``segsam predict`` under GNU time; its wall seconds and peak RSS (MB)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "segsam.cli", "predict", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"segsam predict failed:\n{proc.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    return {"wall_s": seconds, "peak_mb": peak / 1024}


def report(name: str, out: Path, timing: dict[str, float], label: np.ndarray, vocabulary: Vocabulary) -> None:
    record = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    scores = {}
    for organ in ORGANS:
        c = vocabulary.id_of(organ)
        total = (predicted == c).sum() + (label == c).sum()
        scores[organ] = round(float(2 * np.logical_and(predicted == c, label == c).sum() / max(total, 1)), 3)
    planes = sorted(
        {z for e in record["prompts"]["entries"] for z in range(e["axial_planes"][0], e["axial_planes"][1] + 1)}
    )
    print(
        f"{name}: {timing['wall_s']:.1f} s wall (process), {record['seconds']:.1f} s from reading to writing, "
        f"{len(planes)} planes encoded, peak RSS {timing['peak_mb']:.0f} MB; 3D DSC {scores}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, help="a trained SEG-SAM checkpoint (results/models/segsam/...)")
    parser.add_argument("--text", type=Path, help="its class_embeddings.parquet (rule embed_text)")
    parser.add_argument("--refine-boxes", action="store_true")
    args = parser.parse_args()
    if not (args.data / "totalsegmentator").is_dir():
        raise SystemExit(f"{args.data}: no totalsegmentator/ folder (the shared real data)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan, prompts, label, vocabulary = make_case(args.data, folder)
        print(f"scan: {' x '.join(map(str, SIZE))} voxels, {len(ORGANS)} organs boxed; {args.threads} CPU threads")
        runs = [("medsam_lite", [])]
        if args.checkpoint is not None:
            runs.append(
                ("segsam", ["--model", str(args.checkpoint), *(["--text", str(args.text)] if args.text else [])])
            )
        for method, extra in runs:
            out = folder / f"{method}.nii.gz"
            command = [str(scan), str(out), "--method", method, "--prompts", str(prompts)]
            command += ["--threads", str(args.threads), *extra, *(["--refine-boxes"] if args.refine_boxes else [])]
            report(method, out, run_predict(command), label, vocabulary)


if __name__ == "__main__":
    main()
