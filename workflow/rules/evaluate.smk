# Saved test prompts and evaluation per method.   Code: segsam/evaluate/


rule test_prompts:
    input:
        "results/index/masks.parquet",
    output:
        "results/eval/prompts.parquet",
    params:
        evaluate=config["evaluate"],
        code=CODE["test_prompts"],
    log:
        "results/logs/test_prompts.log",
    benchmark:
        "results/benchmarks/test_prompts.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/test_prompts.py"


rule evaluate:
    input:
        unpack(method_checkpoint),
        unpack(class_text),
        unpack(method_embeddings),
        prompts="results/eval/prompts.parquet",
        mlflow="results/mlflow/initialised.json",
    output:
        per_mask="results/eval/{method}/per_mask.parquet",
        per_case="results/eval/{method}/per_case.parquet",
        summary="results/eval/{method}/summary.json",
        examples=directory("results/eval/{method}/examples"),
    params:
        cache_dir=embedding_dir,
        evaluate=config["evaluate"],
        encoder=method_encoder,
        code=CODE["evaluate"],
    threads: 1
    resources:
        mem_mb=3000,
    log:
        "results/logs/evaluate/{method}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/evaluate.py"
