# Pretrained SAM ViT-B weights, and image embeddings of each frozen encoder, computed once per
# (slice, weights).   Code: segsam/data/download.py, segsam/embed/, segsam/models/
#   embed_images  one case's slices -> results/embeddings/<encoder tag>/<case>.{npy,parquet}; stops
#                 rather than take the cache past cache.max_gb (also checked at plan time, common.smk)
# With cache.enabled false no rule here runs: training and evaluation encode the images they read.


rule fetch_vit_b:
    output:
        VIT_B_DOWNLOAD,
    params:
        sha256=config["encoder"]["vit_b"]["sha256"],  # what the file is; url and mirror (config) say where it comes from
    log:
        "results/logs/fetch_vit_b.log",
    conda:
        "../../envs/data.yaml"
    resources:
        downloads=1,
    script:
        "../scripts/fetch_vit_b.py"


rule embed_images:
    input:
        unpack(encoder_weights),
        slices="results/slices/{case}",
    output:
        npy="results/embeddings/{encoder}/{case}.npy",
        table="results/embeddings/{encoder}/{case}.parquet",
    params:
        encoder=lambda wc: ENCODERS_BY_TAG[wc.encoder],
        code=CODE["embed_images"],
    wildcard_constraints:
        encoder="|".join(re.escape(tag) for tag in ENCODERS_BY_TAG),
    threads: 1
    resources:
        mem_mb=3000,
    log:
        "results/logs/embed_images/{encoder}/{case}.log",
    benchmark:
        "results/benchmarks/embed_images/{encoder}/{case}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/embed_images.py"
