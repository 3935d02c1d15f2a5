"""Rule test_prompts: one saved box and point per test mask (segsam.evaluate.prompts)."""

from segsam.errors import run_stage
from segsam.evaluate.prompts import make_test_prompts

run_stage(
    make_test_prompts,
    snakemake.input[0],
    snakemake.output[0],
    evaluate_cfg=snakemake.params.evaluate,
    log=snakemake.log[0],
)
