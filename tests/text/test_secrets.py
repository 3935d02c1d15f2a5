"""The API key reaches the server's Authorization header and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from segsam.errors import run_stage
from segsam.text.describe import describe_vocabulary
from segsam.text.embed import embed_descriptions

KEY = "sk-segsam-LEAKCHECK-7f3a9c0e51d2"


@pytest.fixture
def restore_segsam_logger() -> Iterator[None]:
    """run_stage reconfigures the ``segsam`` logger; put it back afterwards."""
    logger = logging.getLogger("segsam")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    for handler in state[0]:
        logger.addHandler(handler)
    logger.setLevel(state[1])
    logger.propagate = state[2]


def test_key_never_leaves_the_authorization_header(
    fake_openai,
    llm_cfg,
    small_vocab: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    restore_segsam_logger: None,
) -> None:
    monkeypatch.setenv("SEGSAM_TEST_LLM_KEY", KEY)
    for name in ("openai", "httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)  # make_client must quieten these
    caplog.set_level(logging.DEBUG)
    fake_openai.push_chat(status=429, retry_after="0")
    fake_openai.push_embed(status=401)
    fake_openai.push_embed(status=500)
    cache, out = tmp_path / "cache.json", tmp_path / "descriptions.json"
    emb_cfg = {
        "backend": "openai",
        "model": "fake-embed",
        "base_url": fake_openai.base_url,
        "batch_size": 32,
    }
    client = {"api_key_env": "SEGSAM_TEST_LLM_KEY", "max_retries": 2}  # text.llm's, used by the openai backend

    describe_vocabulary(
        small_vocab, tmp_path / "reviewed.json", out, llm_cfg(), generated_file=cache, sleep=lambda s: None
    )
    assert "HTTP 429" in caplog.text
    # a non-retryable failure goes through run_stage into the rule log
    with pytest.raises(SystemExit):
        run_stage(
            embed_descriptions,
            out,
            tmp_path / "e.parquet",
            tmp_path / "c.parquet",
            emb_cfg,
            client,
            log=str(tmp_path / "logs" / "embed_fail.log"),
        )
    # then a transient failure and success, also logged to a file
    run_stage(
        embed_descriptions,
        out,
        tmp_path / "e.parquet",
        tmp_path / "c.parquet",
        emb_cfg,
        client,
        sleep=lambda s: None,
        log=str(tmp_path / "logs" / "embed.log"),
    )
    assert "HTTP 500" in (tmp_path / "logs" / "embed.log").read_text()

    calls = fake_openai.requests
    assert calls and all(call.headers["authorization"] == f"Bearer {KEY}" for call in calls)
    assert all(logging.getLogger(name).level == logging.WARNING for name in ("openai", "httpx", "httpx2"))
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {"cache.json", "descriptions.json", "e.parquet", "c.parquet", "embed.log", "embed_fail.log"} <= {
        path.name for path in written
    }
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    assert "401" in (tmp_path / "logs" / "embed_fail.log").read_text()
    assert KEY not in caplog.text
