"""Rule demo_phantom: one synthetic CT/MR phantom case (segsam.data.phantoms)."""

from segsam.data.phantoms import write_phantom_case
from segsam.errors import run_stage

demo = snakemake.params.demo
run_stage(
    write_phantom_case,
    snakemake.output.image,
    snakemake.output.label,
    modality=snakemake.params.modality,
    seed=snakemake.params.seed,
    shape_xyz=tuple(demo["shape_xyz"]),
    spacing_mm=tuple(demo["spacing_mm"]),
    log=snakemake.log[0],
)
