# Helpers shared by all the workflow files: config validation, case lists, output
# paths, and code hashes that make Snakemake rerun a stage when the segsam
# code it uses changes (Snakemake does not track imported modules itself).

import os
import re

from snakemake.logging import logger
from snakemake.utils import validate

from segsam.config import (
    check_names,
    code_hash,
    dataset_config,
    encoder_settings,
    encoder_tag,
    export_pythonpath,
    reads_cache,
)
from segsam.data.phantoms import phantom_case_ids
from segsam.data.registry import SCANNED, CasesNotReady, load_registry
from segsam.data.sources import DigestCache, case_files
from segsam.data.synonyms import NameMatcher
from segsam.data.vocabulary import ClassIds, LabelMap, read_classes
from segsam.embed.budget import cache_budget
from segsam.errors import ConfigError, DataError
from segsam.methods import get_method
from segsam.text.coverage import missing_descriptions
from segsam.predict.scans import list_scans, prompt_file


export_pythonpath(workflow.basedir)
# the schema checks every key and sets a missing one to its default; dataset and method names are
# checked against their registries (dataset.registry, segsam/methods.py), naming the known ones
validate(config, schema="../schemas/config.schema.yaml", set_default=True)
check_names(config, root=os.getcwd())


# code every stage runs (segsam.config counts only for the stages that import it: code_hash follows imports)
COMMON_CODE = ("errors", "atomic", "logs")
# the segsam.data modules slicing imports (not download/registry/archive: a change there
# must not re-slice every case)
SLICE_CODE = ("data.io", "data.slicing", "data.naming", "data.vocabulary")
# The `code` param of each stage, shared by a rule and its cross-dataset twin. It is a hash of the
# segsam modules it runs, followed through their imports (segsam.config.code_hash).
CODE = {
    "demo_phantom": code_hash("data.phantoms", *COMMON_CODE),
    "slice_volume": code_hash(*SLICE_CODE, *COMMON_CODE),
    "build_index": code_hash("data.index", *SLICE_CODE, *COMMON_CODE),
    "import_release": code_hash("data.sa_med2d", *COMMON_CODE),
    "text": code_hash("text", *COMMON_CODE),
    "embed_images": code_hash("embed.encode", *COMMON_CODE),
    "train": code_hash("train", "tracking", *COMMON_CODE),
    "test_prompts": code_hash("evaluate.prompts", *COMMON_CODE),
    "evaluate": code_hash("evaluate", "tracking", *COMMON_CODE),
    "tables": code_hash("report", *COMMON_CODE),
    "predict": code_hash("predict", "tracking", *COMMON_CODE),
}


# --- the vocabulary: config/vocabulary.csv + vocabulary_extra, each class described --------

VOCABULARY_ROWS = read_classes(config["vocabulary"], config["vocabulary_extra"])
VOCABULARY_NAMES = [row["name"] for row in VOCABULARY_ROWS]
# label names of your own folders (nnU-Net dataset.json, per-class mask files) -> vocabulary names
NAMES = NameMatcher.read(config["synonyms"], VOCABULARY_NAMES)
# the LLM's replies (rule describe_classes' params.generated); with text.llm off, every class needs a description already
LLM_DESCRIPTIONS = "results/cache/llm_descriptions.json"
if not config["text"]["llm"]["enabled"]:
    _undescribed = missing_descriptions(VOCABULARY_NAMES, [config["text"]["descriptions_file"], LLM_DESCRIPTIONS])
    if _undescribed:
        raise ConfigError(
            f"{config['text']['descriptions_file']}: no description for class(es) {', '.join(_undescribed)}; add "
            "them to a description file of your own given as text.descriptions_file (docs/class_knowledge.md), "
            "or let the LLM write them (text.llm.enabled: true)"
        )


# --- the datasets: registry entries, case lists, where their files go ---------------------
# The training dataset (`dataset`) and the cross-dataset ones (`cross.datasets`, table 3) share
# the download stage: fetch_file / extract_archive / stage_case take the dataset as a wildcard.

REGISTRY = load_registry(config["dataset"]["registry"])
DATASET = config["dataset"]["name"]
DATASET_SPEC = REGISTRY.get(DATASET)
DOWNLOAD_DIR = config["dataset"]["download_dir"]
EXTRACT_DIR = config["dataset"]["extract_dir"]
if os.path.normpath(DOWNLOAD_DIR) == os.path.normpath(EXTRACT_DIR):
    raise ValueError("config keys dataset.download_dir and dataset.extract_dir must differ")
CROSS_DATASETS = list(config["cross"]["datasets"])
if DATASET in CROSS_DATASETS:
    raise ValueError(f"config key cross.datasets: {DATASET} is the training dataset (dataset.name); cross-dataset evaluation needs another one")


def dataset_roots(name):
    """Folders that may already hold a dataset's files at their registry paths:
    its mirror first, then its extracted archives and its downloads."""
    settings = dataset_config(config, name)
    mirror = settings["mirror"]
    if REGISTRY.get(name).kind in SCANNED:  # your own files: only the mirror holds them
        return [mirror] if mirror else []
    roots = [f"{EXTRACT_DIR}/{name}", f"{DOWNLOAD_DIR}/{name}"]
    return [mirror, *roots] if mirror else roots


def case_specs(name):
    """({case id: registry CaseSpec}, why the list is not known yet or None) of one dataset.

    The demo and a 2D release (slices2d: imported whole by rule import_release) have no
    registry case list. A list that is discovered from an archive (AMOS) stays empty until
    the archive is there (rule fetch_archives); the reason is returned. The dataset's
    `exclude` drops cases.
    """
    spec = REGISTRY.get(name)
    settings = dataset_config(config, name)
    if spec.kind == "slices2d":
        if name != DATASET:
            raise ValueError(f"config key cross.datasets: {name} is a 2D release; cross datasets are volumes")
        return {}, None
    if spec.kind == "phantoms":
        if name != DATASET:
            raise ValueError(f"config key cross.datasets: {name} is made by the workflow, not a dataset to evaluate on")
        return {}, None
    try:
        listing = spec.case_list(dataset_roots(name), labelmap=settings["labelmap"], names=NAMES)
    except CasesNotReady as err:
        return {}, str(err)
    if listing.warning:  # files of your own folder that its layout does not use
        logger.warning(listing.warning)
    specs = listing.cases
    excluded = set(settings["exclude"])
    unknown = sorted(excluded - set(specs))
    if unknown:
        raise ValueError(f"config key exclude of dataset {name}: {unknown} are not cases of dataset {name}")
    return {case: case_spec for case, case_spec in specs.items() if case not in excluded}, None


# {dataset: (case specs, pending reason)} of every dataset the workflow reads
DATASET_CASES = {name: case_specs(name) for name in [DATASET, *CROSS_DATASETS]}
CASE_SPECS, CASES_PENDING = DATASET_CASES[DATASET]


def labelmaps_used():
    """Every label map file the slicing jobs of this run will read (dataset.labelmap, the registry's, each case's)."""
    used = {case.labelmap for specs, _ in DATASET_CASES.values() for case in specs.values() if case.labelmap}
    if DATASET_SPEC.kind == "phantoms":
        used.add(config["dataset"]["labelmap"] or DATASET_SPEC.labelmap)
    return sorted(used)


# a broken label map stops the run now, naming the file, not when its first slicing job meets it
_CLASS_IDS = ClassIds.from_rows(VOCABULARY_ROWS)
for _labelmap in labelmaps_used():
    try:
        LabelMap.read(_labelmap, _CLASS_IDS)
    except DataError as err:
        raise ConfigError(str(err)) from None


def cases():
    """{case id: modality} of the training dataset (the registry's list for real data)."""
    dataset = config["dataset"]
    if DATASET_SPEC.kind == "phantoms":
        demo = dataset["demo"]
        return {case: modality for case, modality, _ in phantom_case_ids(demo["n_cases"], demo["modalities"])}
    return {case: spec.modality for case, spec in CASE_SPECS.items()}


CASES = cases()
# datasets whose files the download stage fetches (all but the demo phantoms)
DOWNLOADED = [name for name in DATASET_CASES if REGISTRY.get(name).kind in ("volumes", *SCANNED)]
DATASET_FILES = {name: REGISTRY.get(name).all_files(DATASET_CASES[name][0]) for name in DOWNLOADED}
ARCHIVES = {name: sorted(path for path, spec in files.items() if spec.archive) for name, files in DATASET_FILES.items()}
ARCHIVE_PATTERN = "|".join(re.escape(a) for a in sorted({a for paths in ARCHIVES.values() for a in paths})) or r"(?!)"  # (?!) matches nothing
DOWNLOADED_PATTERN = "|".join(re.escape(name) for name in DOWNLOADED) or r"(?!)"


def file_spec(wildcards):
    """The registry entry of one file of a dataset, as plain params."""
    files = DATASET_FILES[wildcards.dataset]
    if wildcards.file not in files:
        raise ValueError(f"{wildcards.file} is not a file of dataset {wildcards.dataset} in {config['dataset']['registry']}")
    spec = files[wildcards.file]
    return {"path": spec.path, "url": spec.url, "sha256": spec.sha256, "manual": spec.manual, "archive": spec.archive}


def dataset_case_files(name):
    """{case: CaseFiles} of a downloaded dataset: where stage_case reads each image and label.
    A file the mirror (or your own folder) holds is read in place, with its content's sha256."""
    spec = REGISTRY.get(name)
    mirror = dataset_config(config, name)["mirror"]
    return {
        case: case_files(
            {"image": case_spec.image, "label": case_spec.label},
            mirror=mirror,
            scanned=spec.kind in SCANNED,
            download_root=f"{DOWNLOAD_DIR}/{name}",
            extract_root=f"{EXTRACT_DIR}/{name}",
            digests=SOURCE_DIGESTS,
        )
        for case, case_spec in DATASET_CASES[name][0].items()
    }


def release_root():
    """Where a 2D release lies (<dataset.mirror>/<release.root>); stops with the registry's manual steps when absent."""
    mirror = config["dataset"]["mirror"]
    root = os.path.join(mirror or "", DATASET_SPEC.release["root"])
    if not mirror or not os.path.isdir(root):
        raise ConfigError(
            f"dataset {DATASET}: the release is not at {root}: set dataset.mirror to the folder that holds "
            f"{DATASET_SPEC.release['root']}/ ({' '.join((DATASET_SPEC.manual or '').split())})"
        )
    return root


# a 2D release is imported whole from the mirror: a missing one stops the plan, saying where it should be
RELEASE_ROOT = release_root() if DATASET_SPEC.kind == "slices2d" else None


def release_files(wildcards):
    """The release's pairing and class-mapping json files: their content decides when it is imported again."""
    release = DATASET_SPEC.release
    names = [*release["image_to_masks"], *release["mask_to_image"], *([release["class_mapping"]] if release.get("class_mapping") else [])]
    return [os.path.join(RELEASE_ROOT, n) for n in names]


# sha256 of the files read in place, remembered by (path, size, mtime) between Snakemake starts
SOURCE_DIGESTS = DigestCache.load("results/cache/source_digests.json")
CASE_FILES = {name: dataset_case_files(name) for name in DOWNLOADED}
# a 2D release's pairing files by content (rule import_release), remembered with the rest
RELEASE_CONTENT = [SOURCE_DIGESTS.digest(path) for path in release_files(None)] if RELEASE_ROOT else []
SOURCE_DIGESTS.save()


def case_sources(wildcards):
    """The files behind a case's image and label: read in place (ancient: only their content counts,
    through params.content) or the download stage's file (or extracted archive folder)."""
    files = CASE_FILES[wildcards.dataset][wildcards.case]
    return {role: ancient(f.path) if f.in_place else f.path for role, f in (("image", files.image), ("label", files.label))}


def case_content(wildcards):
    """sha256 of the files read in place: a changed file re-stages its case, a touched one does not."""
    files = CASE_FILES[wildcards.dataset][wildcards.case]
    return {"image": files.image.digest, "label": files.label.digest}


def case_checks(wildcards):
    """The registry's sha256 of the files read in place (a download was checked when fetched)."""
    files = CASE_FILES[wildcards.dataset][wildcards.case]
    return {role: f.sha256 if f.in_place else None for role, f in (("image", files.image), ("label", files.label))}


def case_members(wildcards):
    """Archive members of a case's image and label (None: the file itself)."""
    spec = DATASET_CASES[wildcards.dataset][0][wildcards.case]
    return {"image": spec.image.member, "label": spec.label.member}


def case_masks(wildcards):
    """{mask file: label value} when the case's label is a folder of per-class masks, else None."""
    masks = DATASET_CASES[wildcards.dataset][0][wildcards.case].masks
    return dict(masks) if masks else None


def index_inputs(wildcards):
    """Every case's slice folder; stops with the reason when the case list is not known yet."""
    if CASES_PENDING:
        raise ValueError(CASES_PENDING)
    return all_slice_dirs()


def case_spec(wildcards):
    """The registry entry of one case of the training dataset, or of a cross dataset ({dataset} wildcard)."""
    return DATASET_CASES[wildcards.get("dataset", DATASET)][0][wildcards.case]


def case_labelmap(wildcards):
    """{"labelmap": file} of one case (dataset.labelmap if set, else the registry's), or {} where its label
    map is given inline (params.reading: an nnU-Net dataset.json, per-class masks)."""
    if "dataset" not in wildcards.keys() and DATASET_SPEC.kind == "phantoms":
        return {"labelmap": config["dataset"]["labelmap"] or DATASET_SPEC.labelmap}
    labelmap = case_spec(wildcards).labelmap
    return {"labelmap": labelmap} if labelmap else {}


def case_reading(wildcards):
    """How slice_volume reads a case: its inline label map (and where that comes from), the case id as
    your files name it, the files named in messages (yours, not the staged copies), resample_labels."""
    name = wildcards.get("dataset", DATASET)
    settings = dataset_config(config, name)
    reading = {"labels": None, "labels_from": None, "source_case": None, "sources": None}
    if REGISTRY.get(name).kind == "phantoms":
        return {**reading, "resample_labels": settings["resample_labels"]}
    spec = case_spec(wildcards)
    files = CASE_FILES[name][wildcards.case]
    if spec.labelmap is None:
        reading["labels"] = dict(spec.labels)
        reading["labels_from"] = files.label.shown if spec.masks else os.path.join(settings["mirror"], "dataset.json")
    return {
        **reading,
        "source_case": spec.source_id,
        "sources": {"image": files.image.shown, "label": files.label.shown},
        "resample_labels": settings["resample_labels"],
    }


# each frozen encoder of the configured methods has one embedding cache, results/embeddings/<tag>/
ENCODERS = {name: encoder_settings(config, name) for name in ("tiny_vit", "vit_b")}
ENCODERS_BY_TAG = {
    encoder_tag(ENCODERS[name]): ENCODERS[name]
    for name in sorted({get_method(m).encoder for m in config["methods"] if reads_cache(config, m)})
}
if ENCODERS_BY_TAG and DATASET_SPEC.kind == "slices2d":
    raise ConfigError(
        f"dataset {DATASET} is a 2D release: its slices are read as they train and are evaluated, not cached; "
        "set cache.enabled: false (docs/training.md#cache)"
    )
# the cache's size, known once the index is: printed at plan time and checked against cache.max_gb (each
# embed_images job checks its cache folder too: a first run has no index when it plans)
if ENCODERS_BY_TAG and os.path.exists("results/index/images.parquet"):
    _budget = cache_budget("results/index/images.parquet", [e["name"] for e in ENCODERS_BY_TAG.values()], config["encoder"]["image_size"], config["cache"]["max_gb"])
    logger.info(_budget.line)
VIT_B_WEIGHTS = config["encoder"]["vit_b"]["weights"]
# where rule fetch_vit_b puts the released file (encoder.vit_b.weights may name your own file instead)
VIT_B_DOWNLOAD = f"results/weights/{os.path.basename(config['encoder']['vit_b']['url'])}"
TRAINED_METHODS = [m for m in config["methods"] if get_method(m).trains]
# table 1 (binary DSC per prompt) has the promptable methods; prompt-free networks and PG-SAM are in table 2 only
PROMPTED_METHODS = [m for m in config["methods"] if get_method(m).prompted]
METHOD_DISPLAY = {m: get_method(m).display for m in config["methods"]}


def demo_seed(wildcards):
    demo = config["dataset"]["demo"]
    return {case: seed for case, _, seed in phantom_case_ids(demo["n_cases"], demo["modalities"])}[wildcards.case]


def all_slice_dirs():
    return expand("results/slices/{case}", case=sorted(CASES))


def embeddings_of(encoder, dataset=None):
    """Every case's cache entry for one encoder (``tiny_vit`` or ``vit_b``): of the training
    dataset (results/embeddings/), or of a cross dataset (results/cross/<dataset>/embeddings/)."""
    tag = encoder_tag(ENCODERS[encoder])
    if dataset is None:
        return expand(f"results/embeddings/{tag}/{{case}}.{{ext}}", case=sorted(CASES), ext=["npy", "parquet"])
    return expand(f"results/cross/{dataset}/embeddings/{tag}/{{case}}.{{ext}}", case=cross_cases(dataset), ext=["npy", "parquet"])


def encoder_weights(wildcards):
    """The weights file an embed job reads, where it is a workflow file (ViT-B); LiteMedSAM's comes with its package."""
    if ENCODERS_BY_TAG[wildcards.encoder]["name"] == "vit_b":
        return {"weights": VIT_B_WEIGHTS}
    return {}


def method_embeddings(wildcards):
    """What a method reads besides the index: the embedding cache of its encoder when that is frozen and
    cache.enabled (the cross dataset's in rule evaluate_cross), the ViT-B weights for ViT-B methods,
    nothing more for a prompt-free network (it reads the images)."""
    spec = get_method(wildcards.method)
    inputs = {}
    if reads_cache(config, spec.name):
        inputs["embeddings"] = embeddings_of(spec.encoder, wildcards.get("dataset"))
    if spec.encoder == "vit_b":
        inputs["weights"] = VIT_B_WEIGHTS
    return inputs


def method_encoder(wildcards):
    """The encoder settings a method's jobs depend on, and whether they read its cache (a prompt-free
    network: the input size only)."""
    spec = get_method(wildcards.method)
    if spec.prompt_free:
        return {"image_size": config["encoder"]["image_size"]}
    return {**ENCODERS[spec.encoder], "cached": reads_cache(config, spec.name)}


def embedding_dir(wildcards, input):
    return os.path.dirname(input.embeddings[0]) if "embeddings" in input.keys() else None


def class_text(wildcards):
    """The class text embeddings, for methods that read them only: T2VSE, PG-SAM's text priors (others do not
    rerun when they change)."""
    if get_method(wildcards.method).needs_text:
        return {"text": "results/text/class_embeddings.parquet"}
    return {}


def method_checkpoint(wildcards):
    if get_method(wildcards.method).trains:
        return {"checkpoint": f"results/models/{wildcards.method}/checkpoint.pt", "train_summary": f"results/models/{wildcards.method}/train_summary.json"}
    return {}


# --- cross-dataset evaluation (cross.smk) ---------------------------------------------------

CROSS_PATTERN = "|".join(re.escape(name) for name in CROSS_DATASETS) or r"(?!)"
CROSS_SLICING = {**config["slicing"], "stride": config["cross"]["stride"] or config["slicing"]["stride"]}
# every method is scored on every cross dataset: table 3 takes those that name classes (SAWD, or a
# prompt-free network), table 5 the SAM baselines before and after SAWD
CROSS_METHODS = list(config["methods"])


def cross_case(wildcards):
    """The registry entry of one case of a cross dataset."""
    return DATASET_CASES[wildcards.dataset][0][wildcards.case]


def cross_cases(name):
    """Case ids of one cross dataset; stops with the reason when its case list is not known yet."""
    specs, pending = DATASET_CASES[name]
    if pending:
        raise ValueError(pending)
    return sorted(specs)


def cross_slice_dirs(wildcards):
    return [f"results/cross/{wildcards.dataset}/slices/{case}" for case in cross_cases(wildcards.dataset)]


def cross_split(wildcards):
    """Every case of a cross dataset is a test case (the models never train on it)."""
    return {**config["split"], "assign": {case: "test" for case in cross_cases(wildcards.dataset)}}


def cross_per_mask(wildcards):
    """{cross dataset: the per-mask tables of its methods} (table 3's input, named per dataset)."""
    return {name: [f"results/cross/{name}/eval/{m}/per_mask.parquet" for m in CROSS_METHODS] for name in CROSS_DATASETS}


def cross_per_case(wildcards):
    """{per_case_<cross dataset>: the per-case 3D tables of its methods} (table 3's 3D view)."""
    return {f"per_case_{name}": [f"results/cross/{name}/eval/{m}/per_case.parquet" for m in CROSS_METHODS] for name in CROSS_DATASETS}


# --- your own scans (predict.smk) ------------------------------------------------------------

PREDICT = config["predict"]
PREDICT_SPEC = get_method(PREDICT["method"])
PREDICT_SCANS = {name: str(path) for name, path in list_scans(PREDICT["input"]).items()} if PREDICT["input"] else {}
# every scan's label volume and sidecar (rule predict_all, and rule all)
PREDICT_OUTPUTS = [f"{PREDICT['output']}/{scan}.{ext}" for scan in PREDICT_SCANS for ext in ("nii.gz", "json")]
PREDICT_PATTERN = "|".join(re.escape(name) for name in PREDICT_SCANS) or r"(?!)"  # (?!) matches nothing
if PREDICT_SCANS and not PREDICT_SPEC.prompt_free and not PREDICT["prompts"]:
    raise ValueError(
        f"config key predict.prompts: method {PREDICT_SPEC.name} is promptable: set predict.prompts to a folder "
        "of <scan>.json / <scan>.csv prompt files (docs/predict.md), or use a prompt-free method (unet, unetr)"
    )
if PREDICT_SCANS and PREDICT_SPEC.prompt_free and PREDICT["prompts"]:
    raise ValueError(f"config key predict.prompts: method {PREDICT_SPEC.name} is prompt-free: set it to null")


def predict_inputs(wildcards):
    """The scan, its prompt file, and what the method reads: its checkpoint, the class text
    embeddings (T2VSE), the ViT-B weights (ViT-B methods)."""
    inputs = {"scan": PREDICT_SCANS[wildcards.scan], "vocabulary": config["vocabulary"]}
    if PREDICT["prompts"]:
        inputs["prompts"] = str(prompt_file(PREDICT["prompts"], wildcards.scan))
    if PREDICT_SPEC.trains:
        inputs["checkpoint"] = f"results/models/{PREDICT_SPEC.name}/checkpoint.pt"
    if PREDICT_SPEC.has_t2vse:
        inputs["text"] = "results/text/class_embeddings.parquet"
    if PREDICT_SPEC.encoder == "vit_b":
        inputs["weights"] = VIT_B_WEIGHTS
    return inputs
