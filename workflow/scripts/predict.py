"""Rule predict: segment one scan of predict.input (segsam.predict.run)."""

from segsam.errors import run_stage
from segsam.predict.run import PredictOptions, predict

run_stage(
    predict,
    snakemake.input.scan,
    snakemake.output.label,
    method=snakemake.params.method,
    config=snakemake.config,
    model=snakemake.input.get("checkpoint"),
    prompts=snakemake.input.get("prompts"),
    options=PredictOptions(refine_boxes=snakemake.params.refine_boxes, modality=snakemake.params.modality),
    text=snakemake.input.get("text"),
    threads=snakemake.threads,
    log=snakemake.log[0],
)
