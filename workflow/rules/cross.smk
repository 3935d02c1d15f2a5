# Cross-dataset evaluation (the paper's table 3): the models trained on the training dataset,
# scored zero-shot on each dataset of cross.datasets (KiTS23, BTCV, AMOS in config/cross.yaml).
# Code: segsam/data (slicing, index), segsam/embed/, segsam/evaluate/,
# segsam/report/cross.py (make_table3).
#
# Per dataset, under results/cross/<dataset>/, the same stages as the training data, reused
# with `use rule`: its volumes come through the download stage (data.smk, {dataset} wildcard),
#   slice_cross_volume   -> slices/<case>/             (cross.stride, else slicing.stride)
#   build_cross_index    -> index/                     (every case in the test split)
#   embed_cross_images   -> embeddings/<encoder>/      (each frozen encoder, once per slice)
#   cross_prompts        -> eval/prompts.parquet       (cross.prompts: box, as in the paper)
#   evaluate_cross       -> eval/<method>/             (every configured method)
# and rule table3 scores mDSC per dataset (the methods with a semantic output), with the rule for classes unseen in training
# (segsam/report/cross.py, README "Metrics"), beside the paper's cells.


use rule slice_volume as slice_cross_volume with:
    input:
        unpack(case_labelmap),
        image="results/raw/{dataset}/{case}_image.nii.gz",
        label="results/raw/{dataset}/{case}_label.nii.gz",
        vocabulary=config["vocabulary"],
    output:
        directory("results/cross/{dataset}/slices/{case}"),
    params:
        slicing=CROSS_SLICING,
        modality=lambda wc: cross_case(wc).modality,
        dataset=lambda wc: wc.dataset,
        vocabulary_extra=config["vocabulary_extra"],
        reading=case_reading,
        code=CODE["slice_volume"],
    log:
        "results/logs/cross/{dataset}/slice_volume/{case}.log",
    benchmark:
        "results/benchmarks/cross/{dataset}/slice_volume/{case}.tsv"
    wildcard_constraints:
        dataset=CROSS_PATTERN,


use rule build_index as build_cross_index with:
    input:
        cross_slice_dirs,
    output:
        masks="results/cross/{dataset}/index/masks.parquet",
        images="results/cross/{dataset}/index/images.parquet",
        summary="results/cross/{dataset}/index/summary.json",
    params:
        split=cross_split,
        code=CODE["build_index"],
    log:
        "results/logs/cross/{dataset}/build_index.log",
    benchmark:
        "results/benchmarks/cross/{dataset}/build_index.tsv"
    wildcard_constraints:
        dataset=CROSS_PATTERN,


use rule embed_images as embed_cross_images with:
    input:
        unpack(encoder_weights),
        slices="results/cross/{dataset}/slices/{case}",
    output:
        npy="results/cross/{dataset}/embeddings/{encoder}/{case}.npy",
        table="results/cross/{dataset}/embeddings/{encoder}/{case}.parquet",
    log:
        "results/logs/cross/{dataset}/embed_images/{encoder}/{case}.log",
    benchmark:
        "results/benchmarks/cross/{dataset}/embed_images/{encoder}/{case}.tsv"
    wildcard_constraints:
        dataset=CROSS_PATTERN,
        encoder="|".join(re.escape(tag) for tag in ENCODERS_BY_TAG),


use rule test_prompts as cross_prompts with:
    input:
        "results/cross/{dataset}/index/masks.parquet",
    output:
        "results/cross/{dataset}/eval/prompts.parquet",
    params:
        evaluate={**config["evaluate"], "prompts": config["cross"]["prompts"]},
        code=CODE["test_prompts"],
    log:
        "results/logs/cross/{dataset}/test_prompts.log",
    benchmark:
        "results/benchmarks/cross/{dataset}/test_prompts.tsv"
    wildcard_constraints:
        dataset=CROSS_PATTERN,


use rule evaluate as evaluate_cross with:
    input:
        unpack(method_checkpoint),
        unpack(class_text),
        unpack(method_embeddings),
        prompts="results/cross/{dataset}/eval/prompts.parquet",
        mlflow="results/mlflow/initialised.json",
    output:
        per_mask="results/cross/{dataset}/eval/{method}/per_mask.parquet",
        per_case="results/cross/{dataset}/eval/{method}/per_case.parquet",
        summary="results/cross/{dataset}/eval/{method}/summary.json",
        examples=directory("results/cross/{dataset}/eval/{method}/examples"),
    log:
        "results/logs/cross/{dataset}/evaluate/{method}.log",
    benchmark:
        "results/benchmarks/cross/{dataset}/evaluate/{method}.tsv"
    wildcard_constraints:
        dataset=CROSS_PATTERN,


rule table3:
    input:
        unpack(cross_per_mask),
        unpack(cross_per_case),
        train_masks="results/index/masks.parquet",
    output:
        csv=report("results/table3.csv", category="Tables", caption="../report/table3.rst"),
        md="results/table3.md",
        png=report("results/figures/table3.png", category="Figures", caption="../report/table3.rst"),
    params:
        datasets=CROSS_DATASETS,
        code=CODE["tables"],
    log:
        "results/logs/table3.log",
    benchmark:
        "results/benchmarks/table3.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table3.py"
