"""Rule build_index: per-case manifests -> masks/images parquet, split by case (segsam.data.index)."""

from segsam.data.index import build_index
from segsam.errors import run_stage

run_stage(
    build_index,
    list(snakemake.input),
    snakemake.output.masks,
    snakemake.output.images,
    test_fraction=snakemake.params.split["test_fraction"],
    seed=snakemake.params.split["seed"],
    log=snakemake.log[0],
)
