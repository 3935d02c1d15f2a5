"""Rule semantic_tables: results/table2.csv (semantic mDSC) and table4.csv (ablation) (segsam.report.tables)."""

from segsam.errors import run_stage
from segsam.report.tables import make_semantic_tables

run_stage(
    make_semantic_tables,
    list(snakemake.input),
    snakemake.output.table2,
    snakemake.output.table4,
    snakemake.output.md,
    config=snakemake.config,
    log=snakemake.log[0],
)
