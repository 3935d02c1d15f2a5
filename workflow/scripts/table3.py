"""Rule table3: results/table3.{csv,md} and its figure, cross-dataset mDSC (segsam.report)."""

from segsam.errors import run_stage
from segsam.report import make_table3_with_figure

run_stage(
    make_table3_with_figure,
    {dataset: list(snakemake.input[dataset]) for dataset in snakemake.params.datasets},
    snakemake.input.train_masks,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    per_case_files={dataset: list(snakemake.input[f"per_case_{dataset}"]) for dataset in snakemake.params.datasets},
    config=snakemake.config,
    log=snakemake.log[0],
)
