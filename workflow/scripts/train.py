"""Rule train: train one method on cached embeddings (segsam.train.loop)."""

from segsam.errors import run_stage
from segsam.train.loop import train_method

run_stage(
    train_method,
    snakemake.wildcards.method,
    snakemake.input.masks,
    snakemake.params.cache_dir,
    snakemake.output.checkpoint,
    snakemake.output.summary,
    config=snakemake.config,
    threads=snakemake.threads,
    log=snakemake.log[0],
)
