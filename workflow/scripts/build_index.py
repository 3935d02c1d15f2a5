"""Rule build_index: per-case manifests -> masks/images parquet + summary, split by case (segsam.data.index)."""

from segsam.data.index import build_index
from segsam.errors import run_stage

split = snakemake.params.split
run_stage(
    build_index,
    list(snakemake.input),
    snakemake.output.masks,
    snakemake.output.images,
    test_fraction=split["test_fraction"],
    seed=split["seed"],
    assign=split.get("assign") or {},
    summary_out=snakemake.output.summary,
    log=snakemake.log[0],
)
