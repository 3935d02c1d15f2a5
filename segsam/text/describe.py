"""Class descriptions (texture, shape, position) from an OpenAI-compatible chat endpoint.

SEG-SAM's T2VSE module (docs/methods.md#t2vse, docs/class_knowledge.md) embeds, for every vocabulary class, an LLM
description of the class's texture, shape and position in medical images; the
paper asked GPT-4 with a fixed template and showed it an example slice with the
class highlighted. This module:

* holds our prompt template (:data:`PROMPT_TEMPLATE`) and its hash
  (:data:`TEMPLATE_HASH`), which is part of every cache key, so changing the
  wording invalidates the cached descriptions;
* asks the endpoint for one JSON object ``{"texture", "shape", "position"}`` per
  class, validates it, and raises :class:`DescriptionError` naming the class
  when the reply does not follow the format (the cache is then left unchanged);
* optionally attaches an example slice (:func:`highlight_example`) as a
  base64 PNG data URL;
* retries 429, 5xx, time-outs and connection failures itself
  (:func:`call_endpoint`, with the shared :mod:`segsam.retry` policy:
  exponential back-off with jitter, ``Retry-After`` honoured) with the
  ``openai`` client's own retries switched off;
* stops asking after the endpoint refuses the credentials (HTTP 401/403):
  the other classes would be refused too;
* never writes the reviewed, committed description file: replies go to a
  generated cache under ``results/``, and a person moves entries into the
  reviewed file with ``segsam accept-descriptions`` after reading them;
* keeps the API key out of logs, errors and files: the key is read from the
  environment variable named in the config, the ``openai``/``httpx`` loggers
  are held at WARNING, provenance records the endpoint's host only, and error
  texts from the server are redacted.

:func:`describe_vocabulary` is the workflow stage (rule ``describe_classes``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
import openai
import pandas as pd
from PIL import Image

from segsam.atomic import write_json
from segsam.config import validate_section
from segsam.data.vocabulary import Vocabulary
from segsam.errors import ConfigError, DataError, SegsamError
from segsam.retry import RetriesExhausted, Retryable, RetryPolicy, call_with_retries, redact, retry_after_seconds
from segsam.text.cache import (
    FIELDS,
    HUMAN_CURATED,
    DescriptionCache,
    DescriptionEntry,
    DescriptionKey,
    Provenance,
    add_description,
    load_descriptions,
    parse_fields,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: System message sent with every description request.
SYSTEM_MESSAGE = (
    "You write short, factual, textbook-style descriptions of how anatomical structures "
    "appear in medical images. You never make or suggest a diagnosis."
)

#: User message; ``{label}`` is the class name with underscores as spaces and
#: ``{image_note}`` is empty or :data:`IMAGE_NOTE`.
PROMPT_TEMPLATE = (
    "Describe how the {label} appears in medical images (CT and MR) for an anatomy reference.\n"
    "Cover exactly three aspects:\n"
    "- texture: its density or signal intensity and internal texture on CT and MR, "
    "compared with neighbouring tissue;\n"
    "- shape: its outline and form as seen in image slices;\n"
    "- position: where it lies in the body and relative to neighbouring structures.\n"
    "{image_note}"
    "Describe appearance only; do not make any medical diagnosis.\n"
    'Answer with one JSON object and nothing else, with exactly the keys "texture", "shape" '
    'and "position"; each value is one or two plain sentences.'
)

#: Inserted into the prompt when an example slice is attached.
IMAGE_NOTE = (
    "The attached image is an example slice in which the {label} is outlined and tinted in "
    "colour; use it as a visual reference only.\n"
)


def _template_hash() -> str:
    payload = json.dumps(
        {"system": SYSTEM_MESSAGE, "prompt": PROMPT_TEMPLATE, "image_note": IMAGE_NOTE, "fields": FIELDS},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


#: First 16 hex digits of the sha256 of the system message, template, image note and fields.
TEMPLATE_HASH: str = _template_hash()

#: Placeholder key for loopback servers (vLLM, Ollama, ...) that do not check keys.
LOCAL_API_KEY = "not-needed"
#: First back-off delay (seconds) of the retry loop; doubles per attempt.
BACKOFF_BASE_S = 1.0
#: Longest back-off or ``Retry-After`` wait (seconds).
BACKOFF_MAX_S = 60.0
#: Colour (RGB) used to outline and tint the class in example slices.
HIGHLIGHT_RGB = (255, 80, 0)
#: Opacity of the tint inside the mask.
HIGHLIGHT_ALPHA = 0.35

_QUIET_LOGGERS = ("openai", "httpx", "httpx2", "httpcore")


class DescriptionError(SegsamError):
    """A class description is missing or an LLM reply does not follow the format."""


class EndpointError(SegsamError):
    """An OpenAI-compatible endpoint failed (after the allowed retries, or with a non-retryable status)."""


class AuthenticationError(EndpointError):
    """The endpoint refused the credentials (HTTP 401 or 403): no further class is requested."""


class NotRequested(EndpointError):
    """A class left unrequested because the endpoint already refused the credentials."""


@dataclass(frozen=True)
class LLMConfig:
    """The ``text.llm`` config section (build it with :meth:`from_mapping`: the schema checks and completes it).

    Attributes:
        enabled: Whether classes missing from the cache may be sent to the endpoint.
        base_url: Endpoint base URL (``None`` = the ``openai`` client's default).
        model: Chat model name.
        temperature: Sampling temperature.
        timeout_s: Per-request timeout.
        max_retries: Retries after the first attempt for 429, 5xx, time-outs.
        concurrency: Parallel requests.
        attach_image: Whether to attach a highlighted example slice.
        api_key_env: Name of the environment variable holding the API key.
    """

    enabled: bool
    base_url: str | None
    model: str
    temperature: float
    timeout_s: float
    max_retries: int
    concurrency: int
    attach_image: bool
    api_key_env: str

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> LLMConfig:
        """Build from the ``text.llm`` section, checked and completed by the config schema.

        Args:
            cfg: The ``text.llm`` mapping; missing keys take their schema defaults.

        Returns:
            The config.

        Raises:
            ConfigError: On unknown keys or invalid values (one line naming the key).
        """
        return cls(**validate_section(cfg, "text.llm"))

    def retry_policy(self) -> RetryPolicy:
        """How requests to the endpoint are retried: ``max_retries`` and ``timeout_s``, back-off with jitter."""
        return RetryPolicy(
            retries=self.max_retries,
            backoff_s=BACKOFF_BASE_S,
            max_backoff_s=BACKOFF_MAX_S,
            timeout_s=self.timeout_s,
            jitter=True,
        )


def _attempt(request: Callable[[], T], what: str, secret: str | None) -> T:
    """One request: 429, 5xx, time-outs and connection errors become :class:`~segsam.retry.Retryable`."""
    try:
        return request()
    except openai.APIStatusError as err:
        status = err.status_code
        if status != 429 and status < 500:
            detail = " ".join(redact(str(err.message), secret).split())[:200]
            error = AuthenticationError if status in (401, 403) else EndpointError
            raise error(f"{what}: HTTP {status} is not retryable ({detail})") from err
        raise Retryable(f"HTTP {status}", retry_after_seconds(err.response.headers.get("retry-after"))) from err
    except openai.APITimeoutError as err:  # before APIConnectionError, its base class
        raise Retryable("timeout") from err
    except openai.APIConnectionError as err:
        raise Retryable("connection error") from err


def call_endpoint(
    request: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    secret: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``request`` and retry transient endpoint failures (:func:`segsam.retry.call_with_retries`).

    Retried: HTTP 429 and 5xx, time-outs and connection errors. Other HTTP
    errors (400, 401, 404, ...) fail at once.

    Args:
        request: Performs one HTTP request through an ``openai`` client.
        what: Names the request in messages, e.g. ``"class 'liver'"``.
        policy: Retry count and back-off.
        secret: The API key, redacted from any server text put in a log line or an error.
        sleep: The wait between attempts (tests pass a fast or recording one).

    Returns:
        What ``request`` returns.

    Raises:
        EndpointError: For a non-retryable status, or when the attempts are used up;
            the message names ``what``, the status and the number of attempts.
    """
    attempt = functools.partial(_attempt, request, what, secret)
    try:
        return call_with_retries(attempt, policy, what, secret=secret, sleep=sleep)
    except RetriesExhausted as err:
        raise EndpointError(str(err)) from err


def is_loopback_url(url: str | None) -> bool:
    """Whether ``url`` points at this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Args:
        url: A base URL, or ``None`` (the hosted default: not loopback).

    Returns:
        True for a loopback host.
    """
    if url is None:
        return False
    host = urlparse(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(api_key_env: str, base_url: str | None) -> str:
    """Read the API key from the environment.

    Args:
        api_key_env: Name of the environment variable.
        base_url: The endpoint; a loopback one may run without a key.

    Returns:
        The key, or :data:`LOCAL_API_KEY` for a keyless loopback server.

    Raises:
        ConfigError: When the variable is unset or empty for a non-loopback endpoint.
    """
    key = os.environ.get(api_key_env, "")
    if key:
        return key
    if is_loopback_url(base_url):
        return LOCAL_API_KEY
    raise ConfigError(
        f"text.llm: environment variable {api_key_env} holds no API key; export it "
        "(keys never go in config files) or point base_url at a local server"
    )


def make_client(base_url: str | None, timeout_s: float, api_key_env: str) -> tuple[openai.OpenAI, str]:
    """Create an ``openai`` client with its own retries off and its loggers quiet.

    Args:
        base_url: Endpoint base URL, or ``None`` for the client's default.
        timeout_s: Per-request timeout in seconds.
        api_key_env: Environment variable holding the key (see :func:`resolve_api_key`).

    Returns:
        The client and the key (for redaction only; never log or store it).

    Raises:
        ConfigError: When no key is available for a non-loopback endpoint.
    """
    key = resolve_api_key(api_key_env, base_url)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=0)
    return client, key


def class_label(class_name: str) -> str:
    """Human wording of a vocabulary name (``kidney_right`` -> ``kidney right``)."""
    return class_name.replace("_", " ")


def build_prompt(class_name: str, with_image: bool) -> str:
    """Fill :data:`PROMPT_TEMPLATE` for one class.

    Args:
        class_name: Vocabulary name.
        with_image: Whether the request carries an example slice.

    Returns:
        The user message text.
    """
    label = class_label(class_name)
    note = IMAGE_NOTE.format(label=label) if with_image else ""
    return PROMPT_TEMPLATE.format(label=label, image_note=note)


def build_messages(class_name: str, example_png: bytes | None) -> list[dict[str, Any]]:
    """Chat messages for one class, with the example slice as a data-URL image part when given.

    Args:
        class_name: Vocabulary name.
        example_png: PNG bytes from :func:`highlight_example`, or ``None``.

    Returns:
        The ``messages`` argument of ``chat.completions.create``.
    """
    prompt = build_prompt(class_name, with_image=example_png is not None)
    if example_png is None:
        content: str | list[dict[str, Any]] = prompt
    else:
        url = "data:image/png;base64," + base64.b64encode(example_png).decode("ascii")
        content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": content}]


def parse_reply(class_name: str, text: str | None) -> dict[str, str]:
    """Parse and validate an LLM reply.

    A surrounding Markdown code fence (```` ```json ... ``` ````) is tolerated;
    anything else must be one JSON object with exactly the keys texture, shape
    and position, each a non-empty string.

    Args:
        class_name: The class asked about (named in errors).
        text: The assistant message content.

    Returns:
        The three fields.

    Raises:
        DescriptionError: Naming the class and the problem.
    """
    body = (text or "").strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        if body.lower().startswith("json"):
            body = body[4:]
    try:
        return parse_fields(json.loads(body))
    except json.JSONDecodeError as err:
        raise DescriptionError(f"class '{class_name}': the LLM reply is not a JSON object ({err.msg})") from err
    except ValueError as err:
        raise DescriptionError(f"class '{class_name}': the LLM reply is invalid: {err}") from err


def highlight_example(image_png: Path, mask_png: Path) -> bytes:
    """Render an example slice: the grey image with the class tinted and outlined in colour.

    Args:
        image_png: The slice (any PIL-readable PNG; converted to grey).
        mask_png: Binary mask of the class (non-zero = inside), same size.

    Returns:
        RGB PNG bytes.

    Raises:
        DataError: When a file is unreadable, the sizes differ or the mask is empty.
    """
    try:
        grey = np.asarray(Image.open(image_png).convert("L"), dtype=np.float32)
        mask = np.asarray(Image.open(mask_png).convert("L")) > 0
    except OSError as err:
        raise DataError(f"{image_png}: cannot read the example slice or its mask ({err})") from err
    if grey.shape != mask.shape:
        raise DataError(f"{mask_png}: mask size {mask.shape} differs from the slice size {grey.shape}")
    if not mask.any():
        raise DataError(f"{mask_png}: the mask is empty, nothing to highlight")
    colour = np.asarray(HIGHLIGHT_RGB, dtype=np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[mask] = (1 - HIGHLIGHT_ALPHA) * rgb[mask] + HIGHLIGHT_ALPHA * colour
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    rgb[mask & ~interior] = colour
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def pick_examples(index: pd.DataFrame, class_names: list[str]) -> dict[str, tuple[Path, Path]]:
    """Pick, per class, the mask with the largest area fraction as its example slice.

    Training-split masks are preferred when the index has a ``split`` column, so
    the example shown to the LLM never comes from a test case when avoidable.

    Args:
        index: Mask index (``results/index/masks.parquet``) with columns image,
            mask, class_name, area_fraction and optionally split.
        class_names: Classes to look up; classes without a mask are left out.

    Returns:
        ``{class name: (image path, mask path)}``.

    Raises:
        DataError: When the index lacks a required column.
    """
    required = {"image", "mask", "class_name", "area_fraction"}
    missing = sorted(required - set(index.columns))
    if missing:
        raise DataError(f"mask index: missing column(s) {', '.join(missing)}")
    examples: dict[str, tuple[Path, Path]] = {}
    for name in class_names:
        rows = index[index["class_name"] == name]
        if "split" in rows.columns and (rows["split"] == "train").any():
            rows = rows[rows["split"] == "train"]
        if rows.empty:
            continue
        best = rows.loc[rows["area_fraction"].idxmax()]
        examples[name] = (Path(best["image"]), Path(best["mask"]))
    return examples


def examples_from_index(mask_index: Path, class_names: list[str]) -> dict[str, tuple[Path, Path]]:
    """Read the mask index and pick one example slice per class (see :func:`pick_examples`).

    Args:
        mask_index: ``masks.parquet`` written by rule ``build_index``.
        class_names: Classes to look up.

    Returns:
        ``{class name: (image path, mask path)}`` for the classes the index has.

    Raises:
        DataError: When the index cannot be read or lacks a column.
    """
    columns = ["image", "mask", "class_name", "area_fraction", "split"]
    try:
        index = pd.read_parquet(mask_index)
    except (OSError, ValueError) as err:
        raise DataError(f"{mask_index}: cannot read the mask index ({err})") from err
    return pick_examples(index[[c for c in columns if c in index.columns]], class_names)


def lookup_keys(class_name: str, cfg: LLMConfig, with_image: bool | None = None) -> list[DescriptionKey]:
    """Cache keys that satisfy a class, in order of preference.

    The configured model's entry comes first. While the LLM is disabled, a
    hand-written (:data:`HUMAN_CURATED`) entry for the same template hash is
    accepted too; once it is enabled, only the configured model's entry counts,
    so enabling ``text.llm`` regenerates the descriptions with that model.

    Args:
        class_name: Vocabulary name.
        cfg: The LLM config.
        with_image: Whether the request for this class carries an example slice
            (default ``cfg.attach_image``; ``False`` for a class without one).

    Returns:
        The candidate keys.
    """
    image = cfg.attach_image if with_image is None else with_image
    keys = [DescriptionKey(class_name, TEMPLATE_HASH, cfg.model, image)]
    if not cfg.enabled:
        keys.append(DescriptionKey(class_name, TEMPLATE_HASH, HUMAN_CURATED, False))
    return keys


def _find(cache: DescriptionCache, class_name: str, cfg: LLMConfig, with_image: bool) -> DescriptionEntry | None:
    for key in lookup_keys(class_name, cfg, with_image):
        if key in cache.entries:
            return cache.entries[key]
    return None


@dataclass
class Describer:
    """Asks one endpoint for class descriptions and stores each valid one in the cache.

    Attributes:
        client: The ``openai`` client (see :func:`make_client`).
        cfg: The LLM config.
        cache_file: Description cache that successful replies are added to.
        policy: Retry policy.
        secret: The API key, for redaction only.
        sleep: The wait between retries (tests pass a fast or recording one).
    """

    client: openai.OpenAI
    cfg: LLMConfig
    cache_file: Path
    policy: RetryPolicy
    secret: str | None = None
    sleep: Callable[[float], None] = time.sleep
    refused: threading.Event = field(default_factory=threading.Event)

    def describe(self, class_name: str, example: tuple[Path, Path] | None) -> DescriptionEntry:
        """Describe one class and add it to the cache.

        Args:
            class_name: Vocabulary name.
            example: (image, mask) PNG paths when an image is attached, else ``None``.

        Returns:
            The new entry.

        Raises:
            DescriptionError: When the reply does not follow the format (nothing is cached).
            EndpointError: When the endpoint fails.
        """
        if self.refused.is_set():
            raise NotRequested(f"class '{class_name}': not requested, the endpoint refused the credentials")
        png = highlight_example(*example) if example is not None else None
        messages = build_messages(class_name, png)

        def request() -> Any:
            return self.client.chat.completions.create(
                model=self.cfg.model, messages=messages, temperature=self.cfg.temperature
            )

        try:
            response = call_endpoint(request, f"class '{class_name}'", self.policy, self.secret, self.sleep)
        except AuthenticationError:
            self.refused.set()  # every other class would be refused too
            raise
        if not response.choices:
            raise DescriptionError(f"class '{class_name}': the LLM reply has no choices")
        fields = parse_reply(class_name, response.choices[0].message.content)
        provenance = Provenance(
            model=self.cfg.model,
            template_hash=TEMPLATE_HASH,
            with_image=png is not None,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            base_url_host=self.client.base_url.host or None,
        )
        entry = DescriptionEntry(class_name=class_name, provenance=provenance, **fields)
        add_description(self.cache_file, entry)
        logger.info("described class '%s' with %s", class_name, self.cfg.model)
        return entry


def _generate(
    names: list[str],
    cfg: LLMConfig,
    cache_file: Path,
    examples: Mapping[str, tuple[Path, Path]] | None,
    sleep: Callable[[float], None],
) -> dict[str, DescriptionEntry]:
    client, key = make_client(cfg.base_url, cfg.timeout_s, cfg.api_key_env)
    describer = Describer(client, cfg, cache_file, cfg.retry_policy(), secret=key, sleep=sleep)
    logger.info(
        "asking %s at %s for %d class description(s), %d in parallel",
        cfg.model,
        client.base_url.host,
        len(names),
        cfg.concurrency,
    )
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        futures = {
            name: pool.submit(describer.describe, name, (examples or {}).get(name) if cfg.attach_image else None)
            for name in names
        }
    results: dict[str, DescriptionEntry] = {}
    errors: list[BaseException] = []
    skipped = 0
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            results[name] = future.result()
        elif isinstance(error, NotRequested):
            skipped += 1
        else:
            logger.error("%s: %s", type(error).__name__, error)
            errors.append(error)
    if skipped:
        logger.error("the endpoint refused the credentials: %d more class(es) were not requested", skipped)
    if errors:
        raise errors[0]
    return results


def _example_slices(
    names: list[str], examples: dict[str, tuple[Path, Path]] | None, mask_index: Path | None
) -> dict[str, tuple[Path, Path]]:
    """The example slice of each class (``attach_image``): given, or the largest mask of the index.

    Raises:
        ConfigError: neither examples nor a mask index.
    """
    if examples is None:
        if mask_index is None:
            raise ConfigError(
                "text.llm.attach_image: no example slices; pass a mask index (rule build_index) "
                "or set attach_image: false"
            )
        examples = examples_from_index(Path(mask_index), names)
    without = [name for name in names if name not in examples]
    if without:
        logger.warning(
            "no example slice in the dataset for %d class(es), described from text alone: %s",
            len(without),
            ", ".join(without),
        )
    return examples


def describe_vocabulary(
    vocabulary_csv: Path,
    reviewed_file: Path,
    out_json: Path,
    llm_cfg: Mapping[str, Any],
    examples: dict[str, tuple[Path, Path]] | None = None,
    *,
    generated_file: Path,
    mask_index: Path | None = None,
    vocabulary_extra: Mapping[str, int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Workflow stage: a description for every vocabulary class, from the cache or the LLM.

    Each class takes its entry from the reviewed file when one matches (see
    :func:`lookup_keys`), else from the generated cache; otherwise, when
    ``llm_cfg["enabled"]``, the endpoint is asked and each valid reply is added
    to ``generated_file`` as soon as it arrives (a class whose reply fails never
    touches it); otherwise the stage fails listing the missing classes. The
    reviewed file is only read.

    With ``attach_image``, each class's example slice is the largest mask of the
    class in the dataset's index (:func:`pick_examples`). A vocabulary class the
    dataset does not contain has no example: it is described from text alone,
    its cache key and provenance say ``with_image: false``, and the log lists
    it, so a later dataset that has the class regenerates it with an image.

    Args:
        vocabulary_csv: Global vocabulary (:class:`segsam.data.vocabulary.Vocabulary`).
        reviewed_file: The reviewed description cache (the committed file); only read.
        generated_file: The cache the LLM's replies go to (under ``results/``).
        out_json: Output: ``{class name: {class_id, texture, shape, position, provenance}}``.
        llm_cfg: The ``text.llm`` config section.
        examples: ``{class name: (image png, mask png)}`` for ``attach_image``.
        mask_index: Mask index to pick the examples from, when ``examples`` is not given.
        vocabulary_extra: Classes the config adds to the vocabulary (``vocabulary_extra``).
        sleep: Sleep used between retries (tests pass a fast one).

    Raises:
        ConfigError: On an invalid config, a missing API key, or ``attach_image``
            with neither ``examples`` nor ``mask_index``.
        DataError: On an unreadable vocabulary, cache file or mask index.
        DescriptionError: When classes are missing and the LLM is disabled, or a reply is invalid.
        EndpointError: When the endpoint keeps failing.
    """
    cfg = LLMConfig.from_mapping(llm_cfg)
    vocabulary = Vocabulary.read(vocabulary_csv, vocabulary_extra)
    generated, reviewed = load_descriptions(generated_file), load_descriptions(reviewed_file)
    cache = DescriptionCache(reviewed.provenance, {**generated.entries, **reviewed.entries})
    if cfg.attach_image:
        examples = _example_slices(vocabulary.names, examples, mask_index)
    chosen: dict[str, DescriptionEntry] = {}
    for name in vocabulary.names:
        entry = _find(cache, name, cfg, with_image=cfg.attach_image and name in (examples or {}))
        if entry is not None:
            chosen[name] = entry
    missing = [name for name in vocabulary.names if name not in chosen]
    logger.info(
        "%d of %d class descriptions found in %s and %s", len(chosen), len(vocabulary), reviewed_file, generated_file
    )
    if missing and not cfg.enabled:
        raise DescriptionError(
            f"{reviewed_file}: no description (template {TEMPLATE_HASH}, model {cfg.model}) for class(es) "
            f"{', '.join(missing)}; add them to this file (see docs/class_knowledge.md) or enable text.llm"
        )
    if missing:
        chosen.update(_generate(missing, cfg, Path(generated_file), examples, sleep))
        logger.info(
            "LLM descriptions are in %s; review them and move them into %s with `segsam accept-descriptions`",
            generated_file,
            reviewed_file,
        )
    out = {
        name: {"class_id": class_id, **chosen[name].fields(), "provenance": chosen[name].provenance.to_dict()}
        for class_id, name in zip(vocabulary.ids, vocabulary.names, strict=True)
    }
    write_json(out_json, out)
    logger.info("wrote %d class descriptions to %s", len(out), out_json)
