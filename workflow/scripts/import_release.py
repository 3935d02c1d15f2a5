"""Rule import_release: a 2D release's pairing json files -> masks/images parquet + summary (segsam.data.sa_med2d)."""

from segsam.data.sa_med2d import import_registry_release
from segsam.errors import run_stage

split = snakemake.params.split
run_stage(
    import_registry_release,
    snakemake.params.root,
    snakemake.params.release,
    {"masks": snakemake.output.masks, "images": snakemake.output.images, "summary": snakemake.output.summary},
    vocabulary_csv=snakemake.input.vocabulary,
    classmap_json=snakemake.input.classmap or None,
    test_fraction=split["test_fraction"],
    seed=split["seed"],
    min_mask_fraction=snakemake.params.min_mask_fraction,
    log=snakemake.log[0],
)
