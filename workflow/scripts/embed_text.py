"""Rule embed_text: one cached text embedding per class (segsam.text.embed)."""

from pathlib import Path

from segsam.errors import run_stage
from segsam.text.embed import embed_descriptions

run_stage(
    embed_descriptions,
    Path(snakemake.input[0]),
    Path(snakemake.output[0]),
    Path(snakemake.params.cache),
    dict(snakemake.params.embedding),
    log=snakemake.log[0],
)
