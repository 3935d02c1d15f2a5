"""Rules evaluate / evaluate_cross: score one method on the saved test prompts of the
training dataset's test split, or of a cross dataset (segsam.evaluate.run)."""

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
    out_per_case=snakemake.output.per_case,
    config=snakemake.config,
    checkpoint=snakemake.input.get("checkpoint"),
    train_summary=snakemake.input.get("train_summary"),
    text_parquet=snakemake.input.get("text"),
    threads=snakemake.threads,
    eval_dataset=snakemake.wildcards.get("dataset"),  # set by evaluate_cross only
    log=snakemake.log[0],
)
