"""Rule stage_case: one case's image and label -> results/raw/<dataset>/<case>_{image,label}.nii.gz
(segsam.data.download)."""

from segsam.data.download import stage_case
from segsam.errors import run_stage

run_stage(
    stage_case,
    {"image": snakemake.input.image, "label": snakemake.input.label},
    snakemake.params.members,
    {"image": snakemake.output.image, "label": snakemake.output.label},
    sha256=snakemake.params.sha256,
    masks=snakemake.params.masks,
    log=snakemake.log[0],
)
