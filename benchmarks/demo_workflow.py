"""Benchmark the demo workflow end to end against its budget.

Copies the workflow to a fresh folder, runs ``snakemake --cores all`` on the
given config, samples the memory of the whole process tree every 0.5 s, then
times three no-op ``snakemake -n`` reruns, and prints each job's time and
memory from its ``benchmark:`` file.

Memory of a process tree: the sum of the processes' PSS (proportional set
size: a page shared by k processes counts 1/k in each, so the libraries torch
maps into every job count once), which is what the tree takes from the
machine. The sum of RSS is printed too; it counts shared pages once per
process and so overstates the total.

    .venv/bin/python benchmarks/demo_workflow.py                   # the default demo
    .venv/bin/python benchmarks/demo_workflow.py --configfile config/tiny.yaml

The demo's budget: demo <= 15 min wall on 2 cores, peak memory <= 4 GB,
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


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of PSS, sum of RSS) in bytes over ``proc`` and its descendants."""
    pss = rss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        pss += info.pss
        rss += info.rss
    return pss, rss


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
    peak_pss = peak_rss = 0
    watcher = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_pss, peak_rss
        while not done.is_set():
            pss, rss = tree_memory(watcher)
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    rc = proc.wait()
    done.set()
    thread.join()
    wall = time.perf_counter() - start
    print(f"config: {args.configfile or 'config/config.yaml (demo)'}; cores: {args.cores}; exit code {rc}")
    print(f"workflow wall time: {wall:.1f} s ({wall / 60:.2f} min)")
    print(f"peak memory of the process tree: {peak_pss / 2**30:.2f} GiB PSS (sum of RSS: {peak_rss / 2**30:.2f} GiB)")
    if rc != 0:
        print(f"workflow failed; see {work}/.snakemake/log")
        sys.exit(rc)
    for bench in sorted((work / "results/benchmarks").rglob("*.tsv")):
        lines = bench.read_text().splitlines()
        if len(lines) > 1:
            row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
            print(
                f"  {bench.relative_to(work / 'results/benchmarks')}: {float(row['s']):.1f} s, "
                f"max RSS {float(row['max_rss']):.0f} MB, max PSS {float(row['max_pss']):.0f} MB"
            )
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
