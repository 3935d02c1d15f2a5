# Image embeddings of the frozen encoder, computed once per (slice, weights).
# Code: segsam/train/embedding_cache.py, segsam/models/


rule embed_images:
    input:
        "results/slices/{case}",
    output:
        npy=f"{EMBED_DIR}/{{case}}.npy",
        table=f"{EMBED_DIR}/{{case}}.parquet",
    params:
        encoder=config["encoder"],
        code=code_hash("train.embedding_cache", "models", *COMMON_CODE),
    threads: 1
    resources:
        mem_mb=3000,
    log:
        f"results/logs/embed_images/{ENCODER_TAG}/{{case}}.log",
    benchmark:
        f"results/benchmarks/embed_images/{ENCODER_TAG}/{{case}}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/embed_images.py"
