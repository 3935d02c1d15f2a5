"""Rule embed_images: frozen-encoder embeddings of one case's slices (segsam.train.embedding_cache)."""

from segsam.errors import run_stage
from segsam.train.embedding_cache import encode_case

run_stage(
    encode_case,
    snakemake.input.slices,
    snakemake.output.npy,
    snakemake.output.table,
    encoder_cfg=snakemake.params.encoder,
    threads=snakemake.threads,
    log=snakemake.log[0],
)
