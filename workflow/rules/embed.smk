# Pretrained SAM ViT-B weights, and image embeddings of each frozen encoder, computed once per
# (slice, weights).   Code: segsam/data/download.py, segsam/embed/, segsam/models/
#   cache_budget  the cache's size from the index, checked against cache.max_gb before any embedding
#   embed_images  one case's slices -> results/embeddings/<encoder tag>/<case>.{npy,parquet}
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


rule cache_budget:
    input:
        "results/index/images.parquet",
    output:
        "results/cache_budget/{encoder}.json",
    params:
        encoders=lambda wc: [ENCODERS_BY_TAG[tag]["name"] for tag in ENCODERS_BY_TAG],
        image_size=config["encoder"]["image_size"],
        max_gb=config["cache"]["max_gb"],
        code=CODE["cache_budget"],
    wildcard_constraints:
        encoder="|".join(re.escape(tag) for tag in ENCODERS_BY_TAG),
    log:
        "results/logs/cache_budget/{encoder}.log",
    benchmark:
        "results/benchmarks/cache_budget/{encoder}.tsv"
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cache_budget.py"


rule embed_images:
    input:
        unpack(encoder_weights),
        slices="results/slices/{case}",
        # nothing is embedded past cache.max_gb; ancient: a new index re-checks the budget, but it re-embeds
        # only the cases whose slices changed
        budget=ancient("results/cache_budget/{encoder}.json"),
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
