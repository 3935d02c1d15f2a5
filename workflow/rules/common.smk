# Helpers shared by all the workflow files: config validation, case lists, output
# paths, and code hashes that make Snakemake rerun a stage when the segsam
# code it uses changes (Snakemake does not track imported modules itself).

import hashlib
import os
from pathlib import Path

from snakemake.utils import validate

from segsam.config import REPO_ROOT, encoder_tag, export_pythonpath
from segsam.data.phantoms import phantom_case_ids
from segsam.data.registry import CasesNotReady, load_registry
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


# --- the dataset: registry entry, case list, where its files go ---------------------------

DATASET = config["dataset"]["name"]
DATASET_SPEC = load_registry(config["dataset"]["registry"]).get(DATASET)
DOWNLOAD_DIR = config["dataset"]["download_dir"]
EXTRACT_DIR = config["dataset"]["extract_dir"]
if os.path.normpath(DOWNLOAD_DIR) == os.path.normpath(EXTRACT_DIR):
    raise ValueError("config keys dataset.download_dir and dataset.extract_dir must differ")


def dataset_roots():
    """Folders that may already hold the dataset's files at their registry paths:
    the mirror first, then the extracted archives and the downloads of this dataset."""
    roots = [f"{EXTRACT_DIR}/{DATASET}", f"{DOWNLOAD_DIR}/{DATASET}"]
    mirror = config["dataset"]["mirror"]
    return [mirror, *roots] if mirror else roots


def case_specs():
    """({case id: registry CaseSpec}, why the list is not known yet or None).

    Demo and 2D (slices2d) datasets have no registry case list. A list that is
    discovered from an archive (AMOS) stays empty until the archive is there
    (rule fetch_archives); the reason is returned. dataset.exclude drops cases.
    """
    if DATASET_SPEC.kind in ("phantoms", "slices2d"):
        return {}, None
    try:
        specs = DATASET_SPEC.cases(dataset_roots(), labelmap=config["dataset"]["labelmap"])
    except CasesNotReady as err:
        return {}, str(err)
    excluded = set(config["dataset"]["exclude"])
    unknown = sorted(excluded - set(specs))
    if unknown:
        raise ValueError(f"config key dataset.exclude: {unknown} are not cases of dataset {DATASET}")
    return {case: spec for case, spec in specs.items() if case not in excluded}, None


CASE_SPECS, CASES_PENDING = case_specs()


def cases():
    """{case id: modality} of the configured dataset (the registry's list for real data)."""
    dataset = config["dataset"]
    if DATASET_SPEC.kind == "phantoms":
        demo = dataset["demo"]
        return {case: modality for case, modality, _ in phantom_case_ids(demo["n_cases"], demo["modalities"])}
    return {case: spec.modality for case, spec in CASE_SPECS.items()}


CASES = cases()


def case_labelmap(wildcards):
    """The label map of one case: dataset.labelmap if set, else the registry's (per case)."""
    if DATASET_SPEC.kind == "phantoms":
        return config["dataset"]["labelmap"] or DATASET_SPEC.labelmap
    return CASE_SPECS[wildcards.case].labelmap
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
