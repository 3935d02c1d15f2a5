"""Rule slice_volume: one volume -> SA-Med2D slices and masks (segsam.data.slicing)."""

from segsam.data.slicing import slice_case
from segsam.errors import run_stage

run_stage(
    slice_case,
    snakemake.input.image,
    snakemake.input.label,
    snakemake.output[0],
    case=snakemake.wildcards.case,
    modality=snakemake.params.modality,
    dataset=snakemake.params.dataset,
    vocabulary_csv=snakemake.input.vocabulary,
    labelmap_json=snakemake.input.get("labelmap"),
    slicing=snakemake.params.slicing,
    vocabulary_extra=snakemake.params.vocabulary_extra,
    **snakemake.params.reading,  # labels, labels_from, source_case, sources, resample_labels
    log=snakemake.log[0],
)
