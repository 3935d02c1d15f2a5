# Class knowledge (SPEC §2 T2VSE, §4): a description (texture, shape, position)
# of every vocabulary class, then one text embedding per class.
# Code: segsam/text/
#
# describe_classes reruns when the vocabulary, the committed description cache,
# the text.llm section (model, ...) or the segsam.text code (which holds the
# prompt template) change. The API key is read inside the job from the environment variable
# named by text.llm.api_key_env; it is never a param, input, output or log line.
#
# embed_text keeps its vectors in results/cache/text_embeddings.parquet, a cache
# and not a declared output: rerunning the rule only embeds changed texts. The
# openai backend shares the client settings of text.llm (api_key_env, timeout_s,
# max_retries), merged into its params below.

TEXT_CLIENT_KEYS = ("api_key_env", "timeout_s", "max_retries")


rule describe_classes:
    input:
        vocabulary=config["vocabulary"],
        cache=config["text"]["descriptions_file"],
    output:
        "results/text/descriptions.json",
    params:
        llm=config["text"]["llm"],
        code=code_hash("text", *COMMON_CODE),
    threads: 1
    resources:
        mem_mb=500,
    log:
        "results/logs/describe_classes.log",
    benchmark:
        "results/benchmarks/describe_classes.tsv"
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/describe_classes.py"


rule embed_text:
    input:
        "results/text/descriptions.json",
    output:
        "results/text/class_embeddings.parquet",
    params:
        embedding={
            **config["text"]["embedding"],
            **{key: config["text"]["llm"][key] for key in TEXT_CLIENT_KEYS},
        },
        cache="results/cache/text_embeddings.parquet",
        code=code_hash("text", *COMMON_CODE),
    threads: 1
    resources:
        mem_mb=2000,
    log:
        "results/logs/embed_text.log",
    benchmark:
        "results/benchmarks/embed_text.tsv"
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/embed_text.py"
