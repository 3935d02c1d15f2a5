"""Distributed training: one process per GPU (or CPU rank) through ``torchrun``.

* :func:`launch` is what the ``train`` rule calls. With one process it trains
  in-process; with more it starts ``python -m torch.distributed.run`` (the
  ``torchrun`` entry point) with ``--nproc_per_node`` processes running
  :func:`main`, and the rendezvous settings of ``train.distributed``.
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
import json
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

log = logging.getLogger(__name__)


def nproc_for(gpus: int, cpu_ranks: int) -> int:
    """Processes per node: the ``gpu`` resource when GPUs exist, else ``train.distributed.cpu_ranks``."""
    return max(1, int(gpus)) if torch.cuda.is_available() and gpus > 0 else max(1, int(cpu_ranks))


def torchrun_command(nproc: int, distributed: Mapping[str, Any], args_file: Path) -> list[str]:
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
    return [*cmd, "-m", "segsam.train.ddp", str(args_file)]


def launch(
    method: str,
    masks_parquet: str | Path,
    cache_dir: str | Path | None,
    out_checkpoint: str | Path,
    out_summary: str | Path,
    *,
    config: Mapping[str, Any],
    nproc: int,
    threads: int = 1,
    state_dir: str | Path | None = None,
    code: str = "",
    text_parquet: str | Path | None = None,
) -> None:
    """Train ``method`` with ``nproc`` processes (see the module docstring).

    The resume state (``state_dir``) is keyed by a fingerprint of the train and
    encoder settings, the training code (``code``, the rule's code hash) and
    the index's content, so only an identical job resumes from it.

    Raises:
        SegsamError: when a distributed run fails (its ranks' output is in the log).
    """
    from segsam.hashing import sha256_of, stable_hash
    from segsam.train.loop import train_method

    fingerprint = stable_hash(
        {
            "train": config["train"],
            "encoder": config["encoder"],
            "loss": config["loss"],
            "code": code,
            "index": sha256_of(masks_parquet),
            "text": sha256_of(text_parquet) if text_parquet else None,
        }
    )
    kwargs = dict(
        method=method,
        masks_parquet=str(masks_parquet),
        cache_dir=str(cache_dir) if cache_dir else None,
        out_checkpoint=str(out_checkpoint),
        out_summary=str(out_summary),
        config=dict(config),
        threads=threads,
        state_dir=str(state_dir) if state_dir else None,
        fingerprint=fingerprint,
        text_parquet=str(text_parquet) if text_parquet else None,
    )
    if nproc <= 1 and int(config["train"]["distributed"]["nnodes"]) <= 1:
        train_method(**kwargs)
        return
    with tempfile.TemporaryDirectory(prefix="segsam-ddp-") as tmp:
        args_file = Path(tmp) / "args.json"
        args_file.write_text(json.dumps(kwargs), encoding="utf-8")
        cmd = torchrun_command(nproc, config["train"]["distributed"], args_file)
        log.info("launching: %s", " ".join(cmd))
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // max(nproc, 1)))}
        proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise SegsamError(f"torchrun with {nproc} processes failed for method {method!r} (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun process: read the job's arguments, train."""
    from segsam.logs import setup_logging
    from segsam.runtime import keep_large_allocations
    from segsam.train.loop import train_method

    parser = argparse.ArgumentParser(description="one rank of a segsam training job (started by torchrun)")
    parser.add_argument("args_file")
    args = parser.parse_args(argv)
    setup_logging(None)
    keep_large_allocations()  # a new process: the launcher's setting does not carry over
    kwargs = json.loads(Path(args.args_file).read_text(encoding="utf-8"))
    context = DistContext.from_env()
    context.init()
    try:
        train_method(**kwargs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
