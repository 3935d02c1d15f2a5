"""Rule train: train one method on cached embeddings, through torchrun when nproc > 1 (segsam.train.ddp)."""

from segsam.errors import run_stage
from segsam.train.ddp import launch, nproc_for
from segsam.train.job import TrainJob


def main() -> None:
    """Build the job (its fingerprint hashes the index, so inside the stage's logging) and launch it."""
    job = TrainJob.create(
        snakemake.wildcards.method,
        snakemake.input.masks,
        snakemake.params.cache_dir,
        snakemake.output.checkpoint,
        snakemake.output.summary,
        config=snakemake.config,
        threads=snakemake.threads,
        state_dir=snakemake.params.state_dir,
        code=snakemake.params.code,
        text_parquet=snakemake.input.get("text"),
    )
    launch(job, nproc_for(snakemake.resources.gpu, snakemake.config["train"]["distributed"]["cpu_ranks"]))


run_stage(main, log=snakemake.log[0])
