"""Rule extract_archive: one zip/tar archive, checked member by member, extracted atomically (segsam.data.archive)."""

from segsam.data.archive import extract_archive
from segsam.errors import run_stage

run_stage(extract_archive, snakemake.input[0], snakemake.output[0], log=snakemake.log[0])
