# Tables and figures.   Code: segsam/report/


rule table1:
    input:
        expand("results/eval/{method}/per_mask.parquet", method=config["methods"]),
    output:
        csv=report("results/table1.csv", category="Tables", caption="../report/table1.rst"),
        md="results/table1.md",
        sidecar="results/table1.json",
        png=report("results/figures/table1.png", category="Figures", caption="../report/table1.rst"),
    params:
        evaluate=config["evaluate"],
        methods=config["methods"],
        code=code_hash("report", "evaluate.metrics", *COMMON_CODE),
    log:
        "results/logs/table1.log",
    benchmark:
        "results/benchmarks/table1.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table1.py"
