# Helpers shared by all the workflow files: config validation, case lists, output
# paths, and code hashes that make Snakemake rerun a stage when the segsam
# code it uses changes (Snakemake does not track imported modules itself).

import hashlib
import os
from pathlib import Path

from snakemake.utils import validate

from segsam.config import REPO_ROOT, encoder_tag, export_pythonpath
from segsam.data.phantoms import phantom_case_ids
from segsam.models.methods import get_method


export_pythonpath(workflow.basedir)
validate(config, schema="../schemas/config.schema.yaml")
for _method in config["methods"]:
    get_method(_method)  # unknown names fail here, naming the known ones


def code_hash(*parts):
    """sha256 over the segsam sources a stage uses (packages or modules, dotted)."""
    digest = hashlib.sha256()
    for part in sorted(parts):
        path = REPO_ROOT / "segsam" / Path(*part.split("."))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# code every stage shares
COMMON_CODE = ("config", "errors", "atomic", "logs")


def cases():
    """{case id: modality} of the configured dataset."""
    dataset = config["dataset"]
    if dataset["name"] == "demo":
        demo = dataset["demo"]
        return {case: modality for case, modality, _ in phantom_case_ids(demo["n_cases"], demo["modalities"])}
    raise ValueError(f"dataset {dataset['name']!r} has no case list yet")


CASES = cases()
DATASET = config["dataset"]["name"]
ENCODER_TAG = encoder_tag(config["encoder"])
EMBED_DIR = f"results/embeddings/{ENCODER_TAG}"
TRAINED_METHODS = [m for m in config["methods"] if get_method(m).trains]


def demo_seed(wildcards):
    demo = config["dataset"]["demo"]
    return {case: seed for case, _, seed in phantom_case_ids(demo["n_cases"], demo["modalities"])}[wildcards.case]


def all_slice_dirs():
    return expand("results/slices/{case}", case=sorted(CASES))


def all_embeddings():
    return expand(f"{EMBED_DIR}/{{case}}.{{ext}}", case=sorted(CASES), ext=["npy", "parquet"])


def embedding_dir(wildcards, input):
    return os.path.dirname(input.embeddings[0])


def method_checkpoint(wildcards):
    if get_method(wildcards.method).trains:
        return {"checkpoint": f"results/models/{wildcards.method}/checkpoint.pt", "train_summary": f"results/models/{wildcards.method}/train_summary.json"}
    return {}
