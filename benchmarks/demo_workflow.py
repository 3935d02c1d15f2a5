"""Benchmark the demo workflow end to end (issue 2 targets).

Copies the workflow to a fresh folder, runs ``snakemake --cores all`` on the
given config, samples the resident memory of the whole process tree every
0.5 s, then times three no-op ``snakemake -n`` reruns.

    .venv/bin/python benchmarks/demo_workflow.py                   # the default demo
    .venv/bin/python benchmarks/demo_workflow.py --configfile config/tiny.yaml

Targets (issue 2): demo <= 15 min wall on 2 cores, peak memory <= 4 GB,
no-op ``snakemake -n`` <= 3 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default=None)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="segsam-bench-"))
    for name in ("Snakefile", "workflow", "config", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    extra = ["--configfile", args.configfile] if args.configfile else []
    cmd = [sys.executable, "-m", "snakemake", "--cores", args.cores, *extra]

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    watcher = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(watcher))
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    rc = proc.wait()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    print(f"config: {args.configfile or 'config/config.yaml (demo)'}; cores: {args.cores}; exit code {rc}")
    print(f"workflow wall time: {wall:.1f} s ({wall / 60:.2f} min)")
    print(f"peak resident memory of the process tree: {peak / 2**30:.2f} GiB")
    if rc != 0:
        print(f"workflow failed; see {work}/.snakemake/log")
        sys.exit(rc)
    for bench in sorted((work / "results/benchmarks").rglob("*.tsv")):
        lines = bench.read_text().splitlines()
        if len(lines) > 1:
            seconds = float(lines[1].split("\t")[0])
            print(f"  {bench.relative_to(work / 'results/benchmarks')}: {seconds:.1f} s")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-n", *extra], cwd=work, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    print(f"no-op `snakemake -n`: {min(times):.2f} s best, {max(times):.2f} s worst of 3")
    print((work / "results/table1.md").read_text())
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
