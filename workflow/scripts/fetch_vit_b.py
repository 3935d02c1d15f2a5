"""Rule fetch_vit_b: SAM's ViT-B checkpoint from encoder.vit_b.mirror or its URL, sha256-checked
(segsam.data.download)."""

from pathlib import Path

from segsam.data.download import RetryPolicy, fetch_file
from segsam.data.registry import RemoteFile
from segsam.errors import run_stage

# the address, mirror and retry settings come from the config, not params: they change how the
# checked file is fetched, not what it is, so changing them reruns nothing
vit_b = snakemake.config["encoder"]["vit_b"]
settings = snakemake.config["dataset"]["download"]
run_stage(
    fetch_file,
    RemoteFile(path=Path(snakemake.output[0]).name, url=vit_b["url"], sha256=snakemake.params.sha256),
    snakemake.output[0],
    mirror=vit_b["mirror"],
    policy=RetryPolicy(retries=settings["retries"], backoff_s=settings["backoff_s"], timeout_s=settings["timeout_s"]),
    progress=True,  # shown only when stderr is a terminal
    log=snakemake.log[0],
)
