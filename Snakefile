# SEG-SAM reproduction workflow.
#
#   snakemake --cores all results/table1.csv                     # the offline CPU demo
#   snakemake --cores all --configfile config/tiny.yaml          # the 3-minute test config
#
# Stages (one rule file each, logic in the segsam package):
#   data.smk      demo phantoms / downloads -> slices -> index       (segsam.data)
#   text.smk      class descriptions -> text embeddings              (segsam.text)
#   embed.smk     frozen-encoder image embeddings, cached            (segsam.embed)
#   train.smk     MLflow store set-up, training per method           (segsam.train, segsam.tracking)
#   evaluate.smk  saved test prompts, evaluation per method          (segsam.evaluate)
#   report.smk    tables and figures                                 (segsam.report)
#   cross.smk     cross-dataset evaluation, table 3 (cross.datasets) (segsam.evaluate, segsam.report)
#   predict.smk   your own scans (predict.input) -> label volumes    (segsam.predict)

import sys

from snakemake.utils import min_version

min_version("9.0")

# segsam lives beside this Snakefile: importable here, and (common.smk exports
# PYTHONPATH) in every rule's script, whichever environment (--sdm conda) runs it.
sys.path.insert(0, workflow.basedir)


configfile: "config/config.yaml"


wildcard_constraints:
    case=r"[A-Za-z0-9_.]+",
    method=r"[A-Za-z0-9_+]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cross.smk"
include: "workflow/rules/predict.smk"


rule all:
    input:
        "results/table1.csv",
        "results/figures/table1.png",
        "results/figures/qualitative.png",
        "results/figures/training_curves.png",
        "results/table2.csv",
        "results/diagnostics/per_class.csv",
        "results/text/class_embeddings.parquet",
        # table 3 when cross-dataset evaluation is configured (config/cross.yaml)
        ["results/table3.csv"] if CROSS_DATASETS else [],
        # PG-SAM's Synapse-style table when a PG-SAM method is configured
        ["results/table_synapse.csv"] if SYNAPSE_TABLE else [],
        # a label volume per scan when predict.input names a folder of scans
        PREDICT_OUTPUTS,
    default_target: True
