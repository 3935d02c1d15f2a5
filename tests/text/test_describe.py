"""Class descriptions through the real ``openai`` client against the fake server."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segsam.cli import GENERATED_DESCRIPTIONS
from segsam.errors import ConfigError, DataError
from segsam.text.cache import HUMAN_CURATED, accept_descriptions, load_descriptions
from segsam.text.describe import (
    TEMPLATE_HASH,
    AuthenticationError,
    DescriptionError,
    EndpointError,
    LLMConfig,
    build_prompt,
    describe_vocabulary,
    highlight_example,
    is_loopback_url,
    parse_reply,
    pick_examples,
    resolve_api_key,
)


def _run(vocab: Path, tmp_path: Path, cfg: dict, sleeps: list[float] | None = None, **kwargs) -> dict:
    out = tmp_path / "descriptions.json"
    kwargs.setdefault("generated_file", tmp_path / "cache.json")  # where the LLM's replies go
    describe_vocabulary(
        vocab, tmp_path / "reviewed.json", out, cfg, sleep=(sleeps if sleeps is not None else []).append, **kwargs
    )
    return json.loads(out.read_text())


def test_template_hash_and_prompt() -> None:
    assert len(TEMPLATE_HASH) == 16
    prompt = build_prompt("kidney_right", with_image=False)
    assert "kidney right" in prompt and "texture" in prompt and "diagnosis" in prompt
    assert "attached image" not in prompt
    assert "attached image" in build_prompt("kidney_right", with_image=True)


@pytest.mark.parametrize(
    "reply",
    [
        "not json",
        '["texture", "shape", "position"]',
        '{"texture": "a", "shape": "b"}',
        '{"texture": "a", "shape": "b", "position": "c", "diagnosis": "d"}',
        '{"texture": "a", "shape": "  ", "position": "c"}',
        '{"texture": "a", "shape": 3, "position": "c"}',
        None,
    ],
)
def test_parse_reply_rejects(reply: str | None) -> None:
    with pytest.raises(DescriptionError, match="class 'liver'"):
        parse_reply("liver", reply)


def test_parse_reply_accepts_code_fence() -> None:
    fields = parse_reply("liver", '```json\n{"texture": "a  b", "shape": "c", "position": "d"}\n```')
    assert fields == {"texture": "a b", "shape": "c", "position": "d"}


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        LLMConfig.from_mapping({"api_key": "x"})
    with pytest.raises(ConfigError, match="concurrency"):
        LLMConfig.from_mapping({"concurrency": 0})
    with pytest.raises(ConfigError, match="max_retries"):
        LLMConfig.from_mapping({"max_retries": -1})


def test_config_takes_the_schema_defaults() -> None:
    cfg = LLMConfig.from_mapping({"model": "m"})
    assert cfg.model == "m" and cfg.max_retries == 5 and cfg.concurrency == 4 and cfg.api_key_env == "OPENAI_API_KEY"
    policy = cfg.retry_policy()
    assert (policy.retries, policy.timeout_s, policy.jitter) == (5, 60, True)


def test_api_key_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGSAM_NO_SUCH_KEY", raising=False)
    assert is_loopback_url("http://127.0.0.1:8000/v1") and is_loopback_url("http://localhost:11434/v1")
    assert is_loopback_url("http://[::1]:8000/v1")
    assert not is_loopback_url(None) and not is_loopback_url("https://api.example.org/v1")
    assert resolve_api_key("SEGSAM_NO_SUCH_KEY", "http://127.0.0.1:8000/v1") == "not-needed"
    with pytest.raises(ConfigError, match="SEGSAM_NO_SUCH_KEY"):
        resolve_api_key("SEGSAM_NO_SUCH_KEY", None)
    with pytest.raises(ConfigError, match="SEGSAM_NO_SUCH_KEY"):
        resolve_api_key("SEGSAM_NO_SUCH_KEY", "https://api.example.org/v1")
    monkeypatch.setenv("SEGSAM_NO_SUCH_KEY", "k")
    assert resolve_api_key("SEGSAM_NO_SUCH_KEY", None) == "k"


def test_success_fills_cache_and_output(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    out = _run(small_vocab, tmp_path, llm_cfg())
    assert list(out) == sorted(["liver", "spleen", "kidney_right"])
    assert out["kidney_right"]["class_id"] == 3
    assert out["kidney_right"]["shape"] == "Smooth outline of the kidney right."
    provenance = out["liver"]["provenance"]
    assert provenance["model"] == "fake-gpt" and provenance["template_hash"] == TEMPLATE_HASH
    assert provenance["base_url_host"] == "127.0.0.1" and provenance["with_image"] is False
    cache = load_descriptions(tmp_path / "cache.json")
    assert {key.class_name for key in cache.entries} == {"liver", "spleen", "kidney_right"}
    request = fake_openai.calls("/chat/completions")[0].body
    assert request["model"] == "fake-gpt" and request["temperature"] == 0.2
    # a second run is served from the cache: no new requests
    before = len(fake_openai.requests)
    assert _run(small_vocab, tmp_path, llm_cfg()) == out
    assert len(fake_openai.requests) == before


def test_429_with_retry_after_then_success(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(status=429, retry_after="0.25")
    fake_openai.push_chat(status=429, retry_after="0")
    sleeps: list[float] = []
    out = _run(vocab, tmp_path, llm_cfg(max_retries=3), sleeps)
    assert out["liver"]["texture"].startswith("Homogeneous")
    assert sleeps == [0.25, 0.0]
    assert len(fake_openai.calls("/chat/completions")) == 3


def test_429_with_an_http_date_retry_after(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(status=429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    sleeps: list[float] = []
    out = _run(vocab, tmp_path, llm_cfg(max_retries=1), sleeps)
    assert "liver" in out
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30  # the server's date, not the 1 s back-off


def test_repeated_500_fails_after_max_retries(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(10, status=500)
    sleeps: list[float] = []
    with pytest.raises(EndpointError, match=r"class 'liver'.*3 attempt.*HTTP 500"):
        _run(vocab, tmp_path, llm_cfg(max_retries=2), sleeps)
    assert len(fake_openai.calls("/chat/completions")) == 3
    assert len(sleeps) == 2 and 1.0 <= sleeps[0] <= 2.0 and 2.0 <= sleeps[1] <= 3.0  # back-off + jitter
    assert not (tmp_path / "cache.json").exists() and not (tmp_path / "descriptions.json").exists()


def test_non_retryable_4xx_fails_at_once(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(3, status=400)
    with pytest.raises(EndpointError, match=r"class 'liver': HTTP 400 is not retryable"):
        _run(vocab, tmp_path, llm_cfg(max_retries=2))
    assert len(fake_openai.calls("/chat/completions")) == 1


def test_timeout_is_retried_then_fails(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(3, delay_s=1.5)
    sleeps: list[float] = []
    with pytest.raises(EndpointError, match=r"class 'liver'.*2 attempt.*timeout"):
        _run(vocab, tmp_path, llm_cfg(timeout_s=0.3, max_retries=1), sleeps)
    assert len(fake_openai.calls("/chat/completions")) == 2 and len(sleeps) == 1


def test_timeout_then_success(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    fake_openai.push_chat(delay_s=1.5)
    out = _run(vocab, tmp_path, llm_cfg(timeout_s=0.5, max_retries=1))
    assert "liver" in out


def test_malformed_reply_leaves_cache_unchanged(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    _run(small_vocab, tmp_path, llm_cfg())
    before = cache.read_bytes()
    vocab = tmp_path / "v2.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n2,pancreas,\n")
    fake_openai.push_chat(content='{"texture": "grainy", "shape": "long"}')
    with pytest.raises(DescriptionError, match=r"class 'pancreas'.*position"):
        _run(vocab, tmp_path, llm_cfg())
    assert cache.read_bytes() == before


def test_one_bad_class_does_not_drop_the_others(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    good = fake_openai.chat_reply
    fake_openai.chat_reply = lambda label: "sorry, I cannot help" if label == "spleen" else good(label)
    with pytest.raises(DescriptionError, match="class 'spleen'"):
        _run(small_vocab, tmp_path, llm_cfg())
    cached = {key.class_name for key in load_descriptions(tmp_path / "cache.json").entries}
    assert cached == {"liver", "kidney_right"}
    assert not (tmp_path / "descriptions.json").exists()


def test_concurrency_caches_every_class(fake_openai, llm_cfg, tmp_path: Path) -> None:
    names = [f"organ_{i}" for i in range(12)]
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n" + "".join(f"{i + 1},{name},\n" for i, name in enumerate(names)))
    fake_openai.push_chat(12, delay_s=0.2)
    out = _run(vocab, tmp_path, llm_cfg(concurrency=6))
    assert sorted(out) == sorted(names)
    assert fake_openai.max_in_flight > 1
    entries = load_descriptions(tmp_path / "cache.json").entries
    assert sorted(key.class_name for key in entries) == sorted(names)
    assert all(out[name]["texture"] == f"Homogeneous soft tissue of the {name.replace('_', ' ')}." for name in names)


def test_disabled_llm_lists_missing_classes(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DescriptionError, match=r"liver, spleen, kidney_right; add them to this file .* or enable text.llm"
    ):
        _run(small_vocab, tmp_path, llm_cfg(enabled=False))
    assert fake_openai.requests == []


def test_human_entries_serve_disabled_llm_only(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    _run(small_vocab, tmp_path, llm_cfg(model=HUMAN_CURATED))  # stand-in for hand-written entries
    calls = len(fake_openai.requests)
    out = _run(small_vocab, tmp_path, llm_cfg(enabled=False, model="gpt-4o"))
    assert {entry["provenance"]["model"] for entry in out.values()} == {HUMAN_CURATED}
    assert len(fake_openai.requests) == calls
    out = _run(small_vocab, tmp_path, llm_cfg(enabled=True, model="gpt-4o"))
    assert {entry["provenance"]["model"] for entry in out.values()} == {"gpt-4o"}
    assert len(fake_openai.requests) == calls + 3


def _write_slice(tmp_path: Path) -> tuple[Path, Path]:
    image = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:20, 10:24] = 255
    image_png, mask_png = tmp_path / "slice.png", tmp_path / "mask.png"
    Image.fromarray(image).save(image_png)
    Image.fromarray(mask).save(mask_png)
    return image_png, mask_png


def test_highlight_example(tmp_path: Path) -> None:
    image_png, mask_png = _write_slice(tmp_path)
    rgb = np.asarray(Image.open(io.BytesIO(highlight_example(image_png, mask_png))))
    assert rgb.shape == (32, 32, 3)
    assert tuple(rgb[8, 15]) == (255, 80, 0)  # outline
    assert rgb[14, 15, 0] > rgb[14, 15, 2]  # tinted inside
    assert rgb[0, 5, 0] == rgb[0, 5, 1] == rgb[0, 5, 2]  # grey outside


def test_pick_examples_takes_largest_mask() -> None:
    index = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png"],
            "mask": ["a_m.png", "b_m.png", "c_m.png", "d_m.png"],
            "class_name": ["liver", "liver", "spleen", "liver"],
            "area_fraction": [0.1, 0.3, 0.05, 0.5],
            "split": ["train", "train", "test", "test"],
        }
    )
    # the largest training mask; a class only in the test split falls back to it
    assert pick_examples(index, ["liver", "spleen", "aorta"]) == {
        "liver": (Path("b.png"), Path("b_m.png")),
        "spleen": (Path("c.png"), Path("c_m.png")),
    }
    with pytest.raises(DataError, match="missing column.*mask"):
        pick_examples(index.drop(columns="mask"), ["liver"])


def test_image_is_attached(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    example = _write_slice(tmp_path)
    out = _run(vocab, tmp_path, llm_cfg(attach_image=True), examples={"liver": example})
    assert out["liver"]["provenance"]["with_image"] is True
    content = fake_openai.calls("/chat/completions")[0].body["messages"][-1]["content"]
    images = [part for part in content if part["type"] == "image_url"]
    assert len(images) == 1
    url = images[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert any("attached image" in part.get("text", "") for part in content)


def test_image_required_when_attach_image(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    with pytest.raises(ConfigError, match="attach_image: no example slices"):
        _run(vocab, tmp_path, llm_cfg(attach_image=True))
    assert fake_openai.requests == []


def test_examples_from_the_mask_index(fake_openai, llm_cfg, tmp_path: Path, caplog) -> None:
    """A class of the index goes with its example; a class absent from the dataset goes without."""
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n2,spleen,\n")
    image_png, mask_png = _write_slice(tmp_path)
    index = tmp_path / "masks.parquet"
    pd.DataFrame(
        {
            "image": [str(image_png)],
            "mask": [str(mask_png)],
            "class_name": ["liver"],
            "area_fraction": [0.2],
            "split": ["train"],
        }
    ).to_parquet(index)
    with caplog.at_level("WARNING", logger="segsam"):
        out = _run(vocab, tmp_path, llm_cfg(attach_image=True), mask_index=index)
    assert out["liver"]["provenance"]["with_image"] is True
    assert out["spleen"]["provenance"]["with_image"] is False
    assert "described from text alone: spleen" in caplog.text
    kinds = {}
    for call in fake_openai.calls("/chat/completions"):
        content = call.body["messages"][-1]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        label = "liver" if any("liver" in part.get("text", "") for part in parts) else "spleen"
        kinds[label] = any(part["type"] == "image_url" for part in parts)
    assert kinds == {"liver": True, "spleen": False}
    # cached under (class, template, model, image-or-not): a rerun asks nothing
    calls = len(fake_openai.requests)
    _run(vocab, tmp_path, llm_cfg(attach_image=True), mask_index=index)
    assert len(fake_openai.requests) == calls


def test_unreadable_mask_index(fake_openai, llm_cfg, tmp_path: Path) -> None:
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n1,liver,\n")
    bad = tmp_path / "masks.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="masks.parquet: cannot read the mask index"):
        _run(vocab, tmp_path, llm_cfg(attach_image=True), mask_index=bad)
    assert fake_openai.requests == [] and not (tmp_path / "descriptions.json").exists()


def test_llm_replies_never_touch_the_reviewed_file(fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path) -> None:
    reviewed = tmp_path / "reviewed.json"
    _run(small_vocab, tmp_path, llm_cfg())  # every class described by the LLM, into the generated cache
    assert not reviewed.exists()
    accept_descriptions(tmp_path / "cache.json", reviewed, ["liver"])  # a person read liver's and accepted it
    before = reviewed.read_bytes()
    (tmp_path / "cache.json").unlink()
    before_requests = len(fake_openai.calls("/chat/completions"))
    out = _run(small_vocab, tmp_path, llm_cfg())  # liver from the reviewed file, the others asked again
    assert reviewed.read_bytes() == before
    assert len(fake_openai.calls("/chat/completions")) == before_requests + 2
    assert {key.class_name for key in load_descriptions(reviewed).entries} == {"liver"}
    assert sorted(out) == ["kidney_right", "liver", "spleen"]


def test_accept_descriptions_moves_named_or_all_entries(
    fake_openai, llm_cfg, small_vocab: Path, tmp_path: Path
) -> None:
    _run(small_vocab, tmp_path, llm_cfg())
    reviewed = tmp_path / "reviewed.json"
    with pytest.raises(DataError, match="no generated description for class.*pancreas"):
        accept_descriptions(tmp_path / "cache.json", reviewed, ["pancreas"])
    assert not reviewed.exists()
    keys = accept_descriptions(tmp_path / "cache.json", reviewed)
    assert sorted(key.class_name for key in keys) == ["kidney_right", "liver", "spleen"]
    entries = load_descriptions(reviewed).entries
    assert {key.class_name for key in entries} == {"kidney_right", "liver", "spleen"}
    assert all(entry.provenance.model == "fake-gpt" for entry in entries.values())  # provenance kept


def test_refused_credentials_stop_every_other_request(fake_openai, llm_cfg, tmp_path: Path) -> None:
    names = [f"organ_{i}" for i in range(10)]
    vocab = tmp_path / "v.csv"
    vocab.write_text("class_id,name,parent\n" + "".join(f"{i + 1},{name},\n" for i, name in enumerate(names)))
    fake_openai.push_chat(10, status=401)
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        _run(vocab, tmp_path, llm_cfg(concurrency=1, max_retries=3))
    assert len(fake_openai.calls("/chat/completions")) == 1  # not one request per class
    assert not (tmp_path / "cache.json").exists()


def test_the_workflow_and_the_cli_name_the_same_generated_cache() -> None:
    rules = (Path(__file__).resolve().parents[2] / "workflow" / "rules" / "text.smk").read_text(encoding="utf-8")
    assert f'generated="{GENERATED_DESCRIPTIONS}"' in rules
