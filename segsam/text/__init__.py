"""Class knowledge for T2VSE: LLM descriptions and their text embeddings (docs/class_knowledge.md).

Modules:
    describe: prompt template and hash, OpenAI-compatible chat requests with our
        own retry loop, reply validation, example-slice highlighting, and the
        ``describe_classes`` stage :func:`segsam.text.describe.describe_vocabulary`.
    embed: sentence-transformers (offline MiniLM) and OpenAI-compatible embedding
        backends and the ``embed_text`` stage :func:`segsam.text.embed.embed_descriptions`.
    cache: the locked, atomically written description (JSON) and embedding
        (parquet) caches.

Nothing is re-exported here, so that importing one module (e.g. the template
hash in the Snakefile) does not load the others.
"""
