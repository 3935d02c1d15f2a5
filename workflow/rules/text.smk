# Class knowledge (docs/class_knowledge.md, docs/methods.md#t2vse): a description (texture, shape, position)
# of every vocabulary class, then one text embedding per class.
# Code: segsam/text/
#
# describe_classes reruns only when what decides its output changes: the vocabulary
# (class list), the committed description cache, the text.llm settings that form the cache
# key (enabled, model, attach_image), or the segsam.text code, which holds the prompt
# template. The other client settings (base_url, temperature, timeout_s, max_retries,
# concurrency, api_key_env) are read from the config inside the job, so changing them reruns
# nothing. With text.llm.attach_image the mask index is an input too (each class's largest
# mask is its example slice), so the stage then runs after build_index. The API key is read
# inside the job from the environment variable named by text.llm.api_key_env; it is never a
# param, input, output or log line. The committed description file is only read: the LLM's
# replies go to results/cache/llm_descriptions.json, and `segsam accept-descriptions` moves the
# ones a person has reviewed into the committed file.
#
# embed_text keeps its vectors in results/cache/text_embeddings.parquet, a cache
# and not a declared output: rerunning the rule only embeds changed texts. It reruns when the
# descriptions or the embedding backend or model change; the openai backend's client settings
# (base_url, batch_size, and text.llm's api_key_env, timeout_s, max_retries) come from the
# config inside the job.

DESCRIPTION_KEY = ("enabled", "model", "attach_image")
EMBEDDING_KEY = ("backend", "model")


rule describe_classes:
    input:
        vocabulary=config["vocabulary"],
        cache=config["text"]["descriptions_file"],
        # the mask index, when the LLM is shown an example slice per class (text.llm.attach_image)
        masks="results/index/masks.parquet" if config["text"]["llm"]["attach_image"] else [],
    output:
        "results/text/descriptions.json",
    params:
        llm_key={key: config["text"]["llm"][key] for key in DESCRIPTION_KEY},
        # classes added by the config (a class without a description stops at start-up: common.smk)
        vocabulary_extra=config["vocabulary_extra"],
        # the LLM's replies: a cache, not the reviewed file (`segsam accept-descriptions` moves them there)
        generated="results/cache/llm_descriptions.json",
        code=CODE["text"],
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
        embedding_key={key: config["text"]["embedding"][key] for key in EMBEDDING_KEY},
        cache="results/cache/text_embeddings.parquet",
        code=CODE["text"],
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
