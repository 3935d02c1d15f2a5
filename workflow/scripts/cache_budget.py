"""Rule cache_budget: the embedding cache's size from the index, stopped past cache.max_gb (segsam.embed.budget)."""

from segsam.embed.budget import write_cache_budget
from segsam.errors import run_stage

run_stage(
    write_cache_budget,
    snakemake.input[0],
    snakemake.params.encoders,
    snakemake.params.image_size,
    snakemake.params.max_gb,
    snakemake.output[0],
    log=snakemake.log[0],
)
