# Helpers shared by all the workflow files: config validation, case lists, output
# paths, and code hashes that make Snakemake rerun a stage when the segsam
# code it uses changes (Snakemake does not track imported modules itself).

import os
import re

from snakemake.utils import validate

from segsam.config import code_hash, encoder_settings, encoder_tag, export_pythonpath
from segsam.data.phantoms import phantom_case_ids
from segsam.data.registry import CasesNotReady, load_registry
from segsam.models.methods import get_method


export_pythonpath(workflow.basedir)
validate(config, schema="../schemas/config.schema.yaml")
for _method in config["methods"]:
    get_method(_method)  # unknown names fail here, naming the known ones


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
    mirror = config["dataset"]["mirror"]
    if DATASET_SPEC.kind == "local":  # your own files: only the mirror holds them
        return [mirror] if mirror else []
    roots = [f"{EXTRACT_DIR}/{DATASET}", f"{DOWNLOAD_DIR}/{DATASET}"]
    return [mirror, *roots] if mirror else roots


def case_specs():
    """({case id: registry CaseSpec}, why the list is not known yet or None).

    The demo has no registry case list; a 2D release (slices2d) is not wired into
    the workflow yet (it stops here, saying how to import it). A list that is
    discovered from an archive (AMOS) stays empty until the archive is there
    (rule fetch_archives); the reason is returned. dataset.exclude drops cases.
    """
    if DATASET_SPEC.kind == "slices2d":
        raise ValueError(
            f"dataset {DATASET} is a 2D release: index it with `python -m segsam.data.sa_med2d` "
            "(segsam/data/sa_med2d.py); the workflow's embedding and training stages take volume datasets only so far"
        )
    if DATASET_SPEC.kind == "phantoms":
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


DATASET_FILES = DATASET_SPEC.all_files(CASE_SPECS)
ARCHIVES = sorted(path for path, spec in DATASET_FILES.items() if spec.archive)
ARCHIVE_PATTERN = "|".join(re.escape(a) for a in ARCHIVES) or r"(?!)"  # (?!) matches nothing
# the segsam.data modules slicing imports (not download/registry/archive: a change there
# must not re-slice every case)
SLICE_CODE = ("data.io", "data.slicing", "data.naming", "data.vocabulary")


def file_spec(wildcards):
    """The registry entry of one file of the dataset, as plain params."""
    if wildcards.file not in DATASET_FILES:
        raise ValueError(f"{wildcards.file} is not a file of dataset {DATASET} in {config['dataset']['registry']}")
    spec = DATASET_FILES[wildcards.file]
    return {"path": spec.path, "url": spec.url, "sha256": spec.sha256, "manual": spec.manual, "archive": spec.archive}


def case_sources(wildcards):
    """The downloaded file (or the extracted archive folder) behind a case's image and label."""
    spec = CASE_SPECS[wildcards.case]
    out = {}
    for role, source in (("image", spec.image), ("label", spec.label)):
        root = EXTRACT_DIR if source.member else DOWNLOAD_DIR
        out[role] = f"{root}/{DATASET}/{source.file.path}"
    return out


def case_members(wildcards):
    """Archive members of a case's image and label (None: the file itself)."""
    spec = CASE_SPECS[wildcards.case]
    return {"image": spec.image.member, "label": spec.label.member}


def index_inputs(wildcards):
    """Every case's slice folder; stops with the reason when the case list is not known yet."""
    if CASES_PENDING:
        raise ValueError(CASES_PENDING)
    return all_slice_dirs()


def case_labelmap(wildcards):
    """The label map of one case: dataset.labelmap if set, else the registry's (per case)."""
    if DATASET_SPEC.kind == "phantoms":
        return config["dataset"]["labelmap"] or DATASET_SPEC.labelmap
    return CASE_SPECS[wildcards.case].labelmap
# each frozen encoder of the configured methods has one embedding cache, results/embeddings/<tag>/
ENCODERS = {name: encoder_settings(config, name) for name in ("tiny_vit", "vit_b")}
ENCODERS_BY_TAG = {
    encoder_tag(ENCODERS[name]): ENCODERS[name]
    for name in sorted({get_method(m).encoder for m in config["methods"] if get_method(m).encoder_frozen})
}
VIT_B_WEIGHTS = config["encoder"]["vit_b"]["weights"]
# where rule fetch_vit_b puts the released file (encoder.vit_b.weights may name your own file instead)
VIT_B_DOWNLOAD = f"results/weights/{os.path.basename(config['encoder']['vit_b']['url'])}"
TRAINED_METHODS = [m for m in config["methods"] if get_method(m).trains]
# table 1 (binary DSC per prompt) has the promptable methods; prompt-free networks are in table 2 only
PROMPTED_METHODS = [m for m in config["methods"] if not get_method(m).prompt_free]
METHOD_DISPLAY = {m: get_method(m).display for m in config["methods"]}


def demo_seed(wildcards):
    demo = config["dataset"]["demo"]
    return {case: seed for case, _, seed in phantom_case_ids(demo["n_cases"], demo["modalities"])}[wildcards.case]


def all_slice_dirs():
    return expand("results/slices/{case}", case=sorted(CASES))


def embeddings_of(encoder):
    """Every case's cache entry for one encoder (``tiny_vit`` or ``vit_b``)."""
    tag = encoder_tag(ENCODERS[encoder])
    return expand(f"results/embeddings/{tag}/{{case}}.{{ext}}", case=sorted(CASES), ext=["npy", "parquet"])


def encoder_weights(wildcards):
    """The weights file an embed job reads, where it is a workflow file (ViT-B); LiteMedSAM's comes with its package."""
    if ENCODERS_BY_TAG[wildcards.encoder]["name"] == "vit_b":
        return {"weights": VIT_B_WEIGHTS}
    return {}


def method_embeddings(wildcards):
    """What a method reads besides the index: the embedding cache of its encoder when that is frozen,
    the ViT-B weights for ViT-B methods, nothing more for a prompt-free network (it reads the images)."""
    spec = get_method(wildcards.method)
    inputs = {}
    if spec.encoder_frozen:
        inputs["embeddings"] = embeddings_of(spec.encoder)
    if spec.encoder == "vit_b":
        inputs["weights"] = VIT_B_WEIGHTS
    return inputs


def method_encoder(wildcards):
    """The encoder settings a method's jobs depend on (a prompt-free network: the input size only)."""
    spec = get_method(wildcards.method)
    if spec.prompt_free:
        return {"image_size": config["encoder"]["image_size"]}
    return ENCODERS[spec.encoder]


def embedding_dir(wildcards, input):
    return os.path.dirname(input.embeddings[0]) if "embeddings" in input.keys() else None


def class_text(wildcards):
    """The class text embeddings, for methods with T2VSE only (others do not rerun when they change)."""
    if get_method(wildcards.method).has_t2vse:
        return {"text": "results/text/class_embeddings.parquet"}
    return {}


def method_checkpoint(wildcards):
    if get_method(wildcards.method).trains:
        return {"checkpoint": f"results/models/{wildcards.method}/checkpoint.pt", "train_summary": f"results/models/{wildcards.method}/train_summary.json"}
    return {}
