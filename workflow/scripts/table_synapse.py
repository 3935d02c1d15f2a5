"""Rule table_synapse: results/table_synapse.{csv,md,json}, per-organ 3D DSC and HD95 (segsam.report.synapse)."""

from segsam.errors import run_stage
from segsam.report.synapse import make_synapse_table

run_stage(
    make_synapse_table,
    list(snakemake.input.per_case),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.sidecar,
    config=snakemake.config,
    log=snakemake.log[0],
)
