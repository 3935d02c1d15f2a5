"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for the text-stage tests.

It implements ``POST /v1/chat/completions`` and ``POST /v1/embeddings``. Each
request first consumes the next scripted :class:`Action` of its endpoint (a
status code with optional ``Retry-After``, a delay, or a fixed reply); when the
script is empty, ``chat_reply`` decides the assistant text (default: a valid
description naming the class) and embeddings are deterministic vectors derived
from the text's sha256. Every request is recorded (path, headers, JSON body).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

EMBED_DIM = 8
LABEL_RE = re.compile(r"Describe how the (.+?) appears in medical images")


@dataclass(frozen=True)
class Action:
    """One scripted response.

    Attributes:
        status: HTTP status to answer with (200 = a normal reply).
        retry_after: Value of the ``Retry-After`` header, if any.
        delay_s: Seconds to wait before answering.
        content: Assistant text of a 200 chat reply (``None`` = default reply).
    """

    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    content: str | None = None


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def default_chat_reply(label: str) -> str:
    """A valid three-field reply naming ``label``."""
    return json.dumps(
        {
            "texture": f"Homogeneous soft tissue of the {label}.",
            "shape": f"Smooth outline of the {label}.",
            "position": f"Typical position of the {label}.",
        }
    )


def fake_vector(text: str) -> list[float]:
    """Deterministic EMBED_DIM-d vector of ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [(byte - 128) / 128.0 for byte in digest[:EMBED_DIM]]


@dataclass
class FakeOpenAI:
    """State and script of the fake server (see the module docstring)."""

    base_url: str = ""
    chat_script: deque[Action] = field(default_factory=deque)
    embed_script: deque[Action] = field(default_factory=deque)
    chat_reply: Callable[[str], str] = default_chat_reply
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def push_chat(self, times: int = 1, **action: Any) -> None:
        """Script the next ``times`` chat responses (keyword arguments of :class:`Action`)."""
        with self.lock:
            self.chat_script.extend([Action(**action)] * times)

    def push_embed(self, times: int = 1, **action: Any) -> None:
        """Script the next ``times`` embedding responses (keyword arguments of :class:`Action`)."""
        with self.lock:
            self.embed_script.extend([Action(**action)] * times)

    @staticmethod
    def vector(text: str) -> list[float]:
        """The embedding the server returns for ``text``."""
        return fake_vector(text)

    def next_action(self, path: str) -> Action:
        """Pop the next scripted action of ``path``'s endpoint (default: a normal reply)."""
        script = self.chat_script if path.endswith("/chat/completions") else self.embed_script
        with self.lock:
            return script.popleft() if script else Action()

    def record(self, item: Recorded) -> None:
        """Remember one request."""
        with self.lock:
            self.requests.append(item)

    def calls(self, suffix: str) -> list[Recorded]:
        """Recorded requests whose path ends with ``suffix``."""
        with self.lock:
            return [item for item in self.requests if item.path.endswith(suffix)]


def _prompt_text(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    if isinstance(user, str):
        return user
    return " ".join(part.get("text", "") for part in user if part.get("type") == "text")


def _make_handler(state: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and went away

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            state.record(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            action = state.next_action(self.path)
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                self._answer(body, action)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, body: dict[str, Any], action: Action) -> None:
            if action.delay_s:
                time.sleep(action.delay_s)
            if action.status != 200:
                headers = {"Retry-After": action.retry_after} if action.retry_after is not None else {}
                error = {"error": {"message": f"scripted status {action.status}", "type": "fake", "code": None}}
                self._send(action.status, error, headers)
                return
            if self.path.endswith("/chat/completions"):
                match = LABEL_RE.search(_prompt_text(body))
                label = match.group(1) if match else "unknown"
                content = action.content if action.content is not None else state.chat_reply(label)
                payload = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", ""),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            elif self.path.endswith("/embeddings"):
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                payload = {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": fake_vector(text)}
                        for i, text in enumerate(texts)
                    ],
                    "model": body.get("model", ""),
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            else:
                self._send(404, {"error": {"message": "not found"}}, {})
                return
            self._send(200, payload, {})

    return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """Start the fake server on an ephemeral 127.0.0.1 port; its ``base_url`` ends in ``/v1``."""
    state = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def small_vocab(tmp_path: Any) -> Any:
    """A three-class vocabulary CSV."""
    path = tmp_path / "vocabulary.csv"
    path.write_text("class_id,name,parent\n1,liver,\n2,spleen,\n3,kidney_right,kidney\n", encoding="utf-8")
    return path


@pytest.fixture
def llm_cfg(fake_openai: FakeOpenAI) -> Callable[..., dict[str, Any]]:
    """Factory of ``text.llm`` sections pointing at the fake server (enabled, fast time-outs)."""

    def make(**overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "enabled": True,
            "base_url": fake_openai.base_url,
            "model": "fake-gpt",
            "temperature": 0.2,
            "timeout_s": 5,
            "max_retries": 2,
            "concurrency": 2,
            "attach_image": False,
            "api_key_env": "SEGSAM_TEST_LLM_KEY",
        }
        cfg.update(overrides)
        return cfg

    return make
