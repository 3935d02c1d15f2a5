"""Rule evaluate: score one method on the saved test prompts (segsam.evaluate.run)."""

from segsam.errors import run_stage
from segsam.evaluate.run import evaluate_method

run_stage(
    evaluate_method,
    snakemake.wildcards.method,
    snakemake.input.prompts,
    snakemake.params.cache_dir,
    snakemake.output.per_mask,
    snakemake.output.summary,
    snakemake.output.examples,
    config=snakemake.config,
    checkpoint=snakemake.input.get("checkpoint"),
    train_summary=snakemake.input.get("train_summary"),
    text_parquet=snakemake.input.get("text"),
    threads=snakemake.threads,
    log=snakemake.log[0],
)
