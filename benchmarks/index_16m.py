"""Build and query an SA-Med2D-16M-sized masks index in bounded memory.

Generates ``--rows`` synthetic mask rows (default 16 million, the size of
SA-Med2D-16M's mask table) in chunks, with a realistic shape: 8 modalities, 40
source datasets, ~4 masks per image and ~60 images per case (so ~67 000 cases),
30 vocabulary classes, and paths in the SA-Med2D naming. The rows are streamed
through :func:`segsam.data.index.write_index_dataset` into a parquet dataset
partitioned by ``modality=/dataset=``; the split is drawn per modality over cases
(:func:`segsam.data.index.split_cases`) from the case table alone. Then
:func:`segsam.data.index.count_masks` answers "CT masks of class liver, per split"
and "all masks per split".

Build and query run in separate child processes, so each reports its own peak
RSS (``resource.getrusage``); ``--compare`` also builds a 1/8-size index to show
that the peak does not grow with the number of rows.

Run: ``python benchmarks/index_16m.py [--rows 16000000] [--chunk 200000] [--out DIR] [--compare]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODALITIES = ["ct", "mr", "pet", "ultrasound", "x_ray", "endoscopy", "dermoscopy", "fundus_photography"]
MODALITY_SHARE = [0.45, 0.35, 0.04, 0.05, 0.04, 0.03, 0.02, 0.02]
N_DATASETS = 40
MASKS_PER_IMAGE = 4
IMAGES_PER_CASE = 60


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _case_table(rows: int):
    """One row per case: case id, modality, dataset (deterministic)."""
    import numpy as np
    import pandas as pd

    n_cases = -(-rows // (MASKS_PER_IMAGE * IMAGES_PER_CASE))
    rng = np.random.default_rng(0)
    modality = rng.choice(len(MODALITIES), size=n_cases, p=MODALITY_SHARE)
    dataset = (modality * 5 + rng.integers(0, 5, size=n_cases)) % N_DATASETS
    return pd.DataFrame(
        {
            "case": [f"case_{i:07d}" for i in range(n_cases)],
            "modality": np.array(MODALITIES)[modality],
            "dataset": [f"ds{d:02d}" for d in dataset],
        }
    )


def _chunks(rows: int, chunk: int, cases, splits):
    """pyarrow tables of mask rows, built with vectorised string kernels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from segsam.data.vocabulary import Vocabulary

    vocab = Vocabulary.read(Path(__file__).resolve().parents[1] / "config" / "vocabulary.csv")
    names = np.array(vocab.names)
    case_ids = cases["case"].to_numpy()
    case_modality = cases["modality"].to_numpy()
    case_dataset = cases["dataset"].to_numpy()
    case_split = np.array([splits[c] for c in case_ids])
    per_case = MASKS_PER_IMAGE * IMAGES_PER_CASE
    rng = np.random.default_rng(1)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        row = np.arange(start, start + n)
        case_index = row // per_case
        image_index = row // MASKS_PER_IMAGE
        slice_index = (image_index % IMAGES_PER_CASE).astype(np.int64)
        class_id = rng.integers(1, len(names) + 1, size=n)
        modality = pa.array(case_modality[case_index])
        dataset = pa.array(case_dataset[case_index])
        case = pa.array(case_ids[case_index])
        stem = pc.binary_join_element_wise(
            modality,
            dataset,
            case,
            pc.binary_join_element_wise("z", pc.utf8_lpad(pc.cast(pa.array(slice_index), pa.string()), 4, "0"), "_"),
            "--",
        )
        instance = (row % MASKS_PER_IMAGE).astype(np.int64)
        mask = pc.binary_join_element_wise(
            "masks/",
            stem,
            "--",
            pc.utf8_lpad(pc.cast(pa.array(class_id), pa.string()), 4, "0"),
            "_",
            pc.utf8_lpad(pc.cast(pa.array(instance), pa.string()), 3, "0"),
            ".png",
            "",
        )
        yield pa.table(
            {
                "image": pc.binary_join_element_wise("images/", stem, ".png", ""),
                "mask": mask,
                "dataset": dataset,
                "modality": modality,
                "case": case,
                "axis": pa.array(np.full(n, "z")),
                "slice": pa.array(slice_index),
                "class_id": pa.array(class_id.astype(np.int64)),
                "class_name": pa.array(names[class_id - 1]),
                "instance": pa.array(instance),
                "area_fraction": pa.array(rng.uniform(0.00153, 0.3, size=n)),
                "height": pa.array(np.full(n, 256, dtype=np.int64)),
                "width": pa.array(np.full(n, 256, dtype=np.int64)),
                "spacing_mm": pa.array(np.full(n, 1.0)),
                "split": pa.array(case_split[case_index]),
            }
        )


def build(rows: int, chunk: int, out: Path) -> dict[str, float]:
    from segsam.data.index import split_cases, write_index_dataset

    base = _peak_rss_mb()  # after the imports (pandas, pyarrow, SimpleITK via segsam.data)
    start = time.perf_counter()
    cases = _case_table(rows)
    splits = split_cases(cases[["case", "modality"]], test_fraction=0.2, seed=0)
    written = write_index_dataset(_chunks(rows, chunk, cases, splits), out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return {
        "rows": written,
        "cases": len(cases),
        "build_s": seconds,
        "rows_per_s": written / seconds,
        "disk_mb": size / 2**20,
        "files": sum(1 for _ in out.rglob("*.parquet")),
        "build_peak_rss_mb": _peak_rss_mb(),
        "build_base_rss_mb": base,
    }


def query(out: Path) -> dict[str, object]:
    from segsam.data.index import count_masks

    base = _peak_rss_mb()
    start = time.perf_counter()
    liver = count_masks(out, modality="ct", class_name="liver")
    first = time.perf_counter() - start
    start = time.perf_counter()
    per_split = count_masks(out)
    second = time.perf_counter() - start
    return {
        "ct_liver_per_split": liver,
        "ct_liver_s": first,
        "all_per_split": per_split,
        "all_s": second,
        "query_peak_rss_mb": _peak_rss_mb(),
        "query_base_rss_mb": base,
    }


def _child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, encoding="utf-8", errors="replace", check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16_000_000)
    parser.add_argument("--chunk", type=int, default=200_000)
    parser.add_argument("--out", type=Path, help="where the dataset goes (default: a temporary folder, removed)")
    parser.add_argument("--compare", action="store_true", help="also build a 1/8-size index (peak RSS vs rows)")
    parser.add_argument("--phase", choices=["build", "query"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "build":
        print(json.dumps(build(args.rows, args.chunk, args.out)))
        return
    if args.phase == "query":
        print(json.dumps(query(args.out)))
        return
    root = Path(tempfile.mkdtemp(prefix="segsam-index16m-")) if args.out is None else args.out
    try:
        sizes = [args.rows // 8, args.rows] if args.compare else [args.rows]
        for rows in sizes:
            out = root / f"masks_{rows}"
            built = _child("--phase", "build", "--rows", str(rows), "--chunk", str(args.chunk), "--out", str(out))
            asked = _child("--phase", "query", "--out", str(out))
            print(
                f"{rows:,} rows ({built['cases']:,} cases): build {built['build_s']:.1f} s "
                f"({built['rows_per_s'] / 1e6:.2f} M rows/s), {built['disk_mb']:.0f} MB on disk in "
                f"{built['files']} files, "
                f"peak RSS {built['build_peak_rss_mb']:.0f} MB ({built['build_base_rss_mb']:.0f} MB after imports) | "
                f"query ct+liver per split {asked['ct_liver_per_split']} in {asked['ct_liver_s']:.2f} s, "
                f"all per split {asked['all_per_split']} in {asked['all_s']:.2f} s, "
                f"peak RSS {asked['query_peak_rss_mb']:.0f} MB ({asked['query_base_rss_mb']:.0f} MB after imports)"
            )
            print(json.dumps({**built, **asked, "chunk": args.chunk}))
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
