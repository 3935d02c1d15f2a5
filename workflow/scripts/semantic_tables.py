"""Rule semantic_tables: results/table2.csv (semantic mDSC), table4.csv (ablation) and table5.csv (SAWD plugged
into the baselines, with the cross datasets' rows when configured) (segsam.report.semantic)."""

from segsam.errors import run_stage
from segsam.report.semantic import make_semantic_tables

run_stage(
    make_semantic_tables,
    list(snakemake.input.per_mask),
    snakemake.output.table2,
    snakemake.output.table4,
    snakemake.output.md,
    config=snakemake.config,
    out_table5=snakemake.output.table5,
    cross_per_mask={dataset: list(snakemake.input[dataset]) for dataset in snakemake.params.datasets},
    log=snakemake.log[0],
)
