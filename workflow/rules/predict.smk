# Segment your own scans (docs/predict.md): every scan of the folder predict.input (volume files,
# and sub-folders each holding a DICOM series) -> <predict.output>/<scan>.nii.gz + <scan>.json,
# one job per scan, so scans run in parallel and only new or changed ones rerun.
# predict.input: null (the default) plans nothing.   Code: segsam/predict/
#
# A method that trains reads its workflow checkpoint (rule train makes it if needed); a
# promptable method reads predict.prompts/<scan>.json (or .csv) for each scan. The scan list and
# the inputs of each job are in common.smk (PREDICT_SCANS, predict_inputs).


rule predict:
    input:
        unpack(predict_inputs),
    output:
        label=f"{PREDICT['output']}/{{scan}}.nii.gz",
        sidecar=f"{PREDICT['output']}/{{scan}}.json",
    params:
        method=PREDICT["method"],
        modality=PREDICT["modality"],
        refine_boxes=PREDICT["refine_boxes"],
        intensity={key: config["slicing"][key] for key in ("ct_window", "mr_percentiles")},
        encoder=ENCODERS[PREDICT_SPEC.encoder] if PREDICT_SPEC.encoder else config["encoder"]["image_size"],
        threshold=config["evaluate"]["threshold"],
        code=CODE["predict"],
    threads: 2
    resources:
        mem_mb=4000,
    log:
        "results/logs/predict/{scan}.log",
    benchmark:
        "results/benchmarks/predict/{scan}.tsv"
    wildcard_constraints:
        scan=PREDICT_PATTERN,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/predict.py"


rule predict_all:
    input:
        PREDICT_OUTPUTS,
