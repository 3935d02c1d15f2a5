# MLflow store set-up and training per method.   Code: segsam/tracking.py, segsam/train/

from segsam.train.job import result_settings


rule mlflow_init:
    output:
        "results/mlflow/initialised.json",
    params:
        tracking=config["tracking"],
    log:
        "results/logs/mlflow_init.log",
    benchmark:
        "results/benchmarks/mlflow_init.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/mlflow_init.py"


rule train:
    input:
        unpack(class_text),
        unpack(method_embeddings),
        masks="results/index/masks.parquet",
        mlflow="results/mlflow/initialised.json",
    output:
        checkpoint="results/models/{method}/checkpoint.pt",
        summary="results/models/{method}/train_summary.json",
    params:
        cache_dir=embedding_dir,
        state_dir=lambda wc: f"results/models/{wc.method}/state",
        train=result_settings(config["train"]),  # not the loader's workers or the GPUs: they leave the result alone
        encoder=method_encoder,
        loss=config["loss"],
        code=CODE["train"],
    threads: 2
    resources:
        mem_mb=4000,
        gpu=config["train"]["gpus"],  # GPUs (= torchrun processes) per job; --set-resources train:gpu=4 or a profile overrides
    log:
        "results/logs/train/{method}.log",
    benchmark:
        "results/benchmarks/train/{method}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train.py"
