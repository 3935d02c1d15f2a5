"""Rule describe_classes: class descriptions from the cache or the LLM (segsam.text.describe)."""

from pathlib import Path

from segsam.errors import run_stage
from segsam.text.describe import describe_vocabulary

run_stage(
    describe_vocabulary,
    Path(snakemake.input.vocabulary),
    Path(snakemake.input.cache),
    Path(snakemake.output[0]),
    dict(snakemake.config["text"]["llm"]),  # all client settings; params.llm_key holds the tracked ones
    generated_file=Path(snakemake.params.generated),
    mask_index=Path(snakemake.input.masks) if snakemake.input.masks else None,
    vocabulary_extra=snakemake.params.vocabulary_extra,
    log=snakemake.log[0],
)
