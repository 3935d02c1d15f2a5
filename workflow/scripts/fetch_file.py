"""Rule fetch_file: one registry file from dataset.mirror or its URL, sha256-checked (segsam.data.download)."""

from segsam.data.download import RetryPolicy, fetch_file
from segsam.data.registry import RemoteFile
from segsam.errors import run_stage

settings = snakemake.params.download
run_stage(
    fetch_file,
    RemoteFile(**snakemake.params.spec),
    snakemake.output[0],
    mirror=snakemake.config["dataset"]["mirror"],  # not a param: where a checked file comes from must not rerun anything
    policy=RetryPolicy(retries=settings["retries"], backoff_s=settings["backoff_s"], timeout_s=settings["timeout_s"]),
    progress=False,
    log=snakemake.log[0],
)
