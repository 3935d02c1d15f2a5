"""Rule embed_text: one cached text embedding per class (segsam.text.embed)."""

from pathlib import Path

from segsam.errors import run_stage
from segsam.text.embed import embed_descriptions

text = snakemake.config["text"]
# the openai backend shares text.llm's client settings; params.embedding_key holds the tracked ones
settings = {**text["embedding"], **{key: text["llm"][key] for key in ("api_key_env", "timeout_s", "max_retries")}}
run_stage(
    embed_descriptions,
    Path(snakemake.input[0]),
    Path(snakemake.output[0]),
    Path(snakemake.params.cache),
    settings,
    log=snakemake.log[0],
)
