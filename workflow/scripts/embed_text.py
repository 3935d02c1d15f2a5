"""Rule embed_text: one cached text embedding per class (segsam.text.embed)."""

from pathlib import Path

from segsam.errors import run_stage
from segsam.text.embed import embed_descriptions

text = snakemake.config["text"]
# the openai backend uses text.llm's api_key_env, timeout_s and max_retries; params.embedding_key
# holds the settings that decide the vectors
run_stage(
    embed_descriptions,
    Path(snakemake.input[0]),
    Path(snakemake.output[0]),
    Path(snakemake.params.cache),
    dict(text["embedding"]),
    dict(text["llm"]),
    log=snakemake.log[0],
)
