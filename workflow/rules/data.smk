# Data stage: volumes -> SA-Med2D slices -> index.   Code: segsam/data/


rule demo_phantom:
    output:
        image="results/raw/demo/{case}_image.nii.gz",
        label="results/raw/demo/{case}_label.nii.gz",
    params:
        demo=config["dataset"]["demo"],
        modality=lambda wc: CASES[wc.case],
        seed=demo_seed,
        code=code_hash("data.phantoms", *COMMON_CODE),
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


rule slice_volume:
    input:
        image=f"results/raw/{DATASET}/{{case}}_image.nii.gz",
        label=f"results/raw/{DATASET}/{{case}}_label.nii.gz",
        vocabulary=config["vocabulary"],
        labelmap=config["dataset"]["labelmap"],
    output:
        directory("results/slices/{case}"),
    params:
        slicing=config["slicing"],
        modality=lambda wc: CASES[wc.case],
        dataset=DATASET,
        code=code_hash("data", *COMMON_CODE),
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
        all_slice_dirs(),
    output:
        masks="results/index/masks.parquet",
        images="results/index/images.parquet",
    params:
        split=config["split"],
        code=code_hash("data", *COMMON_CODE),
    log:
        "results/logs/build_index.log",
    benchmark:
        "results/benchmarks/build_index.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/build_index.py"
