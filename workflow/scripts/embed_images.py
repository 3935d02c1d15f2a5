"""Rule embed_images: frozen-encoder embeddings of one case's slices (segsam.embed.encode)."""

from segsam.embed.encode import encode_case
from segsam.errors import run_stage

run_stage(
    encode_case,
    snakemake.input.slices,
    snakemake.output.npy,
    snakemake.output.table,
    encoder_cfg=snakemake.params.encoder,
    max_gb=snakemake.config["cache"]["max_gb"],  # not a param: a new limit re-embeds nothing
    threads=snakemake.threads,
    log=snakemake.log[0],
)
