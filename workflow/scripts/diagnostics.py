"""Rule diagnostics: SAWD's confusion matrices, the per-class and per-case tables (segsam.report.diagnostics)."""

from segsam.errors import run_stage
from segsam.report.diagnostics import make_diagnostics

run_stage(
    make_diagnostics,
    list(snakemake.input),
    snakemake.output.confusion,
    snakemake.output.per_class,
    snakemake.output.per_case,
    snakemake.output.md,
    snakemake.output.png,
    config=snakemake.config,
    log=snakemake.log[0],
)
