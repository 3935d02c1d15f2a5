# Data stage: demo phantoms or registry downloads -> SA-Med2D slices -> index.   Code: segsam/data/
#
# Real datasets come from config/datasets.yaml (segsam/data/registry.py):
#   fetch_file       one registry file the mirror does not hold: from its URL (resumable,
#                    retried), or an archive from the mirror; sha256-checked before it lands
#   extract_archive  one zip/tar file, safely (no absolute paths, '..' or escaping links)
#   stage_case       one case's image + label -> results/raw/<dataset>/<case>_{image,label}.nii.gz:
#                    a file the mirror (or your local / nnunet folder) holds is read in place
#                    (one staged copy, sha256-checked where the registry has one; a DICOM folder
#                    converted, a folder of per-class masks combined), else the download
#   download_dataset target: every case staged;  fetch_archives target: every archive fetched
#                    (AMOS reads its case list from its archive: run this target first)
#   import_release   a 2D release (kind slices2d, SA-Med2D-16M) already in <dataset.mirror>: its
#                    pairing json files -> the index, split by case (no slicing)
# These rules serve the training dataset and the cross-dataset ones (cross.datasets) alike:
# {dataset} is one of them.
# A volume that fails its checks fails its own slice_volume job only: with --keep-going every
# other case is still sliced, and the index is built once the case is fixed or listed in
# dataset.exclude. A case whose label volume is empty is skipped with a warning (its slice
# folder holds an empty manifest and a summary.json saying why) and counted by build_index.
#
# fetch_file, extract_archive and stage_case have no `code` param on purpose: their outputs are
# the registry's bytes (sha256-checked), so a change to the download code must not download,
# extract and re-slice a whole dataset again. A changed URL or sha256 (params.spec) does rerun.
# A file read in place is an `ancient` input: its content (params.content, its sha256, cached by
# size and mtime in results/cache/source_digests.json) decides, not its time, so an edited file
# re-stages exactly its case and what follows, and a touched one reruns nothing.


rule demo_phantom:
    output:
        image="results/raw/demo/{case}_image.nii.gz",
        label="results/raw/demo/{case}_label.nii.gz",
    params:
        demo=config["dataset"]["demo"],
        modality=lambda wc: CASES[wc.case],
        seed=demo_seed,
        code=CODE["demo_phantom"],
    log:
        "results/logs/demo_phantom/{case}.log",
    benchmark:
        "results/benchmarks/demo_phantom/{case}.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=500,
    script:
        "../scripts/demo_phantom.py"


if DOWNLOADED:

    localrules:
        fetch_file,
        download_dataset,
        fetch_archives,

    rule fetch_file:
        output:
            f"{DOWNLOAD_DIR}/{{dataset}}/{{file}}",
        params:
            spec=file_spec,
        log:
            "results/logs/fetch_file/{dataset}/{file}.log",
        wildcard_constraints:
            dataset=DOWNLOADED_PATTERN,
            file=r".+",
        conda:
            "../../envs/data.yaml"
        resources:
            downloads=1,
        script:
            "../scripts/fetch_file.py"

    rule extract_archive:
        input:
            f"{DOWNLOAD_DIR}/{{dataset}}/{{archive}}",
        output:
            directory(f"{EXTRACT_DIR}/{{dataset}}/{{archive}}"),
        log:
            "results/logs/extract_archive/{dataset}/{archive}.log",
        wildcard_constraints:
            dataset=DOWNLOADED_PATTERN,
            archive=ARCHIVE_PATTERN,
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=500,
        script:
            "../scripts/extract_archive.py"

    rule stage_case:
        input:
            unpack(case_sources),
        output:
            image="results/raw/{dataset}/{case}_image.nii.gz",
            label="results/raw/{dataset}/{case}_label.nii.gz",
        params:
            members=case_members,
            content=case_content,
            sha256=case_checks,
            masks=case_masks,
        log:
            "results/logs/stage_case/{dataset}/{case}.log",
        wildcard_constraints:
            dataset=DOWNLOADED_PATTERN,
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=1000,
        script:
            "../scripts/stage_case.py"

    rule download_dataset:
        input:
            [f"results/raw/{name}/{case}_{role}.nii.gz" for name in DOWNLOADED for case in sorted(DATASET_CASES[name][0]) for role in ("image", "label")],

    rule fetch_archives:
        input:
            [f"{DOWNLOAD_DIR}/{name}/{archive}" for name in DOWNLOADED for archive in ARCHIVES[name]],


rule slice_volume:
    input:
        # the label map file; none where it comes inline (params.reading.labels)
        unpack(case_labelmap),
        image=f"results/raw/{DATASET}/{{case}}_image.nii.gz",
        label=f"results/raw/{DATASET}/{{case}}_label.nii.gz",
        vocabulary=config["vocabulary"],
    output:
        directory("results/slices/{case}"),
    params:
        slicing=config["slicing"],
        modality=lambda wc: CASES[wc.case],
        dataset=DATASET,
        vocabulary_extra=config["vocabulary_extra"],
        reading=case_reading,
        code=CODE["slice_volume"],
    log:
        "results/logs/slice_volume/{case}.log",
    benchmark:
        "results/benchmarks/slice_volume/{case}.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=1500,
    script:
        "../scripts/slice_volume.py"


rule build_index:
    input:
        index_inputs,
    output:
        masks="results/index/masks.parquet",
        images="results/index/images.parquet",
        summary="results/index/summary.json",
    params:
        split=config["split"],
        code=CODE["build_index"],
    log:
        "results/logs/build_index.log",
    benchmark:
        "results/benchmarks/build_index.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/build_index.py"


if DATASET_SPEC.kind == "slices2d":

    ruleorder: import_release > build_index

    # a 2D release (SA-Med2D) is sliced already: its pairing json files become the index
    rule import_release:
        input:
            release=ancient(release_files),  # their content (params.content) decides, not their time
            vocabulary=config["vocabulary"],
            classmap=DATASET_SPEC.classmap or [],
        output:
            masks="results/index/masks.parquet",
            images="results/index/images.parquet",
            summary="results/index/summary.json",
        params:
            root=RELEASE_ROOT,
            release=DATASET_SPEC.release,
            content=RELEASE_CONTENT,
            split=config["split"],
            min_mask_fraction=config["slicing"]["min_mask_fraction"],
            code=CODE["import_release"],
        log:
            "results/logs/import_release.log",
        benchmark:
            "results/benchmarks/import_release.tsv"
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=4000,
        script:
            "../scripts/import_release.py"
