"""Distributed training: one process per GPU (or CPU rank) through ``torchrun``.

* :func:`launch` is what the ``train`` rule calls, with a
  :class:`~segsam.train.job.TrainJob`. With one process it trains
  in-process; with more it writes the job as JSON and starts
  ``python -m torch.distributed.run`` (the ``torchrun`` entry point) with
  ``--nproc_per_node`` processes running :func:`main` on that file, and the
  rendezvous settings of ``train.distributed``.
* Backend: NCCL on CUDA, gloo on CPU. Only rank 0 writes checkpoints and
  logs to MLflow (:func:`segsam.tracking.is_rank0`).
* Data: every rank draws the same global batch with the same generator and
  trains on its share (images ``r, r + W, ...``); per-rank losses are scaled
  so that DDP's gradient average equals the gradient of the mean over the
  global batch. One rank and W ranks with the same ``train.batch_size``
  (the global batch) therefore follow the same trajectory, up to float
  summation order.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from segsam.errors import SegsamError
from segsam.train.dist import DistContext
from segsam.train.job import TrainJob
from segsam.train.loop import train

log = logging.getLogger(__name__)


def nproc_for(gpus: int, cpu_ranks: int) -> int:
    """Processes per node: the ``gpu`` resource when GPUs exist, else ``train.distributed.cpu_ranks``."""
    return max(1, int(gpus)) if torch.cuda.is_available() and gpus > 0 else max(1, int(cpu_ranks))


def torchrun_command(nproc: int, distributed: Mapping[str, Any], job_file: Path) -> list[str]:
    """The ``torchrun`` command line for this job (documented multi-node settings)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    nnodes = int(distributed.get("nnodes", 1))
    if nnodes > 1:
        if not distributed.get("rdzv_endpoint"):
            raise SegsamError("train.distributed.rdzv_endpoint must be host:port when nnodes > 1")
        cmd += [
            f"--nnodes={nnodes}",
            f"--rdzv_backend={distributed.get('rdzv_backend', 'c10d')}",
            f"--rdzv_endpoint={distributed['rdzv_endpoint']}",
            f"--rdzv_id={distributed.get('rdzv_id', 'segsam')}",
        ]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "segsam.train.ddp", str(job_file)]


def launch(job: TrainJob, nproc: int) -> None:
    """Train ``job`` with ``nproc`` processes (see the module docstring).

    With one process on one node it trains in-process; otherwise it writes
    the job as JSON to a temporary folder and starts ``torchrun``, whose
    ranks each read it back (:func:`main`).

    Args:
        job: The training job (its fingerprint keys the resume state:
            :meth:`TrainJob.create`).
        nproc: Processes on this node (:func:`nproc_for`).

    Raises:
        SegsamError: when a distributed run fails (its ranks' output is in the log).
    """
    distributed = job.config["train"]["distributed"]
    if nproc <= 1 and int(distributed["nnodes"]) <= 1:
        train(job)
        return
    with tempfile.TemporaryDirectory(prefix="segsam-ddp-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(job.to_json(), encoding="utf-8")
        cmd = torchrun_command(nproc, distributed, job_file)
        log.info("launching: %s", " ".join(cmd))
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, job.threads // max(nproc, 1)))}
        proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise SegsamError(f"torchrun with {nproc} processes failed for method {job.method!r} (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun process: read the job, train."""
    from segsam.logs import setup_logging
    from segsam.runtime import keep_large_allocations

    parser = argparse.ArgumentParser(description="one rank of a segsam training job (started by torchrun)")
    parser.add_argument("job_file", help="the job as JSON (segsam.train.job.TrainJob.to_json)")
    args = parser.parse_args(argv)
    setup_logging(None)
    keep_large_allocations()  # a new process: the launcher's setting does not carry over
    job = TrainJob.from_json(Path(args.job_file).read_text(encoding="utf-8"))
    context = DistContext.from_env()
    context.init()
    try:
        train(job)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
