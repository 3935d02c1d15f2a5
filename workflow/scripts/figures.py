"""Rule figures: qualitative panel and training curves (segsam.report.figures)."""

from segsam.errors import run_stage
from segsam.report.figures import qualitative_panel, training_curves

run_stage(
    qualitative_panel,
    snakemake.input.prompts,
    list(snakemake.input.examples),
    snakemake.params.displays,
    snakemake.output.qualitative,
    log=snakemake.log[0],
)
run_stage(training_curves, list(snakemake.input.summaries), snakemake.output.curves, log=snakemake.log[0])
