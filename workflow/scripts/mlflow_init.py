"""Rule mlflow_init: create the MLflow sqlite store and experiment once (segsam.tracking)."""

from segsam.errors import run_stage
from segsam.tracking import init_store

tracking = snakemake.params.tracking
run_stage(
    init_store,
    tracking["uri"],
    tracking["experiment"],
    tracking["artifacts"],
    snakemake.output[0],
    log=snakemake.log[0],
)
