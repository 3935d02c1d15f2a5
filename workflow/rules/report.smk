# Tables and figures.   Code: segsam/report/

from segsam.report.synapse import synapse_rows


rule table1:
    input:
        per_mask=expand("results/eval/{method}/per_mask.parquet", method=PROMPTED_METHODS),
        # each evaluation's summary beside its table: the pretrained weights behind it (provenance)
        summaries=expand("results/eval/{method}/summary.json", method=PROMPTED_METHODS),
    output:
        csv=report("results/table1.csv", category="Tables", caption="../report/table1.rst"),
        md="results/table1.md",
        sidecar="results/table1.json",
        png=report("results/figures/table1.png", category="Figures", caption="../report/table1.rst"),
    params:
        evaluate=config["evaluate"],
        methods=PROMPTED_METHODS,
        code=CODE["tables"],
    log:
        "results/logs/table1.log",
    benchmark:
        "results/benchmarks/table1.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table1.py"


rule figures:
    input:
        prompts="results/eval/prompts.parquet",
        examples=expand("results/eval/{method}/examples", method=config["methods"]),
        summaries=expand("results/models/{method}/train_summary.json", method=TRAINED_METHODS),
    output:
        qualitative=report("results/figures/qualitative.png", category="Figures", caption="../report/qualitative.rst"),
        curves=report("results/figures/training_curves.png", category="Figures", caption="../report/training_curves.rst"),
    params:
        displays=[METHOD_DISPLAY[m] for m in config["methods"]],
        code=CODE["tables"],
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/figures.py"


rule semantic_tables:
    input:
        unpack(cross_per_mask),  # table 5's KiTS23 / BTCV rows, when they are cross datasets
        per_mask=expand("results/eval/{method}/per_mask.parquet", method=config["methods"]),
    output:
        table2=report("results/table2.csv", category="Tables", caption="../report/table2.rst"),
        table4=report("results/table4.csv", category="Tables", caption="../report/table4.rst"),
        table5=report("results/table5.csv", category="Tables", caption="../report/table5.rst"),
        md="results/tables_semantic.md",
    params:
        evaluate=config["evaluate"],
        methods=config["methods"],
        datasets=CROSS_DATASETS,
        cross_prompts=config["cross"]["prompts"],
        code=CODE["tables"],
    log:
        "results/logs/semantic_tables.log",
    benchmark:
        "results/benchmarks/semantic_tables.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/semantic_tables.py"


# PG-SAM's Synapse-style table (3D DSC and HD95 per organ, per case): written when a PG-SAM method is listed in
# `methods`. Its rows: the methods without prompts (PG-SAM and its switches, U-Net, UNETR) and SEG-SAM with box
# prompts, as configured (segsam/report/synapse.py).
SYNAPSE_ROWS = synapse_rows(config["methods"])
SYNAPSE_TABLE = any(get_method(m).pg_sam is not None for m in config["methods"])


rule table_synapse:
    input:
        per_case=expand("results/eval/{method}/per_case.parquet", method=[m for m, _ in SYNAPSE_ROWS]),
    output:
        csv=report("results/table_synapse.csv", category="Tables", caption="../report/table_synapse.rst"),
        md="results/table_synapse.md",
        sidecar="results/table_synapse.json",
    params:
        evaluate=config["evaluate"],
        rows=[f"{method} ({prompt})" for method, prompt in SYNAPSE_ROWS],
        code=CODE["tables"],
    log:
        "results/logs/table_synapse.log",
    benchmark:
        "results/benchmarks/table_synapse.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/table_synapse.py"


rule diagnostics:
    input:
        expand("results/eval/{method}/per_mask.parquet", method=PROMPTED_METHODS),
    output:
        confusion="results/diagnostics/confusion.csv",
        per_class=report("results/diagnostics/per_class.csv", category="Diagnostics", caption="../report/diagnostics.rst"),
        per_case="results/diagnostics/per_case.csv",
        md="results/diagnostics/per_class.md",
        png=report("results/figures/confusion.png", category="Diagnostics", caption="../report/diagnostics.rst"),
    params:
        code=CODE["tables"],
    log:
        "results/logs/diagnostics.log",
    benchmark:
        "results/benchmarks/diagnostics.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/diagnostics.py"
