"""Rule fetch_file: one registry file from dataset.mirror or its URL, sha256-checked (segsam.data.download)."""

from segsam.config import dataset_config
from segsam.data.download import RetryPolicy, fetch_file
from segsam.data.registry import RemoteFile, load_registry
from segsam.errors import run_stage

# mirror and retry settings come from the config, not params: they change how a checked file
# is fetched, not what it is, so changing them must not rerun any download
dataset = dataset_config(snakemake.config, snakemake.wildcards.dataset)  # the training or a cross dataset
settings = dataset["download"]
run_stage(
    fetch_file,
    RemoteFile(**snakemake.params.spec),
    snakemake.output[0],
    mirror=dataset["mirror"],
    policy=RetryPolicy(retries=settings["retries"], backoff_s=settings["backoff_s"], timeout_s=settings["timeout_s"]),
    progress=True,  # shown only when stderr is a terminal
    manual_step=load_registry(dataset["registry"]).get(dataset["name"]).manual,
    log=snakemake.log[0],
)
