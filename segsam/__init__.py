"""SEG-SAM reproduction workflow: the code each Snakemake rule runs, one package per stage (README.md)."""

from segsam.errors import log_early_failures

# a Snakemake script job whose imports fail still leaves the error in its rule's log
log_early_failures()
