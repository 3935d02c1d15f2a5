"""Rule table1: results/table1.{csv,md,json} and its figure (segsam.report)."""

from segsam.errors import run_stage
from segsam.report import make_table1_with_figure

run_stage(
    make_table1_with_figure,
    list(snakemake.input.per_mask),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.sidecar,
    snakemake.output.png,
    config=snakemake.config,
    log=snakemake.log[0],
)
