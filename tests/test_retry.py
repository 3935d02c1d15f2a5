"""Tests of the shared retry policy (segsam.retry): back-off, cap, jitter, Retry-After, the retry loop."""

from __future__ import annotations

import email.utils
import logging
import random

import pytest

from segsam.retry import RetriesExhausted, Retryable, RetryPolicy, call_with_retries, redact, retry_after_seconds

NOW = 1_700_000_000.0  # a fixed "now" for HTTP-date arithmetic


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)  # "Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("-3", 0.0),
        (_http_date(NOW + 30), 30.0),
        (_http_date(NOW - 30), 0.0),  # a date in the past: retry now
        ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),  # a zone-less date is GMT
        (None, None),
        ("", None),
        ("soon", None),
    ],
    ids=["int", "spaces", "float", "zero", "negative", "date", "past-date", "zoneless-date", "absent", "empty", "junk"],
)
def test_retry_after_in_seconds_or_as_an_http_date(value: str | None, seconds: float | None) -> None:
    assert _http_date(NOW) == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert retry_after_seconds(value, now=NOW) == seconds


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(retries=8, backoff_s=0.5, max_backoff_s=10)
    assert [policy.wait(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_retry_after_replaces_the_backoff_and_is_capped_too() -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.1, max_backoff_s=5)
    assert policy.wait(0, retry_after=2.0) == 2.0
    assert policy.wait(2, retry_after=7.0) == 5.0
    assert policy.wait(1, retry_after=retry_after_seconds(_http_date(NOW + 3600), now=NOW)) == 5.0


def test_jitter_adds_up_to_one_backoff_and_not_to_retry_after() -> None:
    policy = RetryPolicy(retries=3, backoff_s=1.0, max_backoff_s=60, jitter=True, rng=random.Random(0))
    waits = [policy.wait(n) for n in range(3)]
    assert all(2**n <= wait <= 2**n + 1 for n, wait in enumerate(waits))
    assert waits != [1.0, 2.0, 4.0]
    assert policy.wait(0, retry_after=0.25) == 0.25
    assert RetryPolicy(backoff_s=50, max_backoff_s=60, jitter=True).wait(3) == 60  # the cap holds with jitter


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"retries": 1.5}, {"backoff_s": -1.0}, {"timeout_s": 0}])
def test_policy_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


class Flaky:
    """Fails ``failures`` times with Retryable, then returns "ok"."""

    def __init__(self, failures: int, reason: str = "HTTP 503", retry_after: float | None = None) -> None:
        self.failures = failures
        self.reason = reason
        self.retry_after = retry_after
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise Retryable(self.reason, self.retry_after)
        return "ok"


def test_call_with_retries_waits_then_succeeds() -> None:
    sleeps: list[float] = []
    flaky = Flaky(2)
    assert call_with_retries(flaky, RetryPolicy(retries=2, backoff_s=0.5), "x", sleep=sleeps.append) == "ok"
    assert flaky.calls == 3 and sleeps == [0.5, 1.0]


def test_call_with_retries_honours_retry_after() -> None:
    sleeps: list[float] = []
    call_with_retries(Flaky(1, retry_after=3.0), RetryPolicy(retries=1, backoff_s=0.5), "x", sleep=sleeps.append)
    assert sleeps == [3.0]


def test_call_with_retries_gives_up_after_the_attempts() -> None:
    flaky = Flaky(10)
    with pytest.raises(RetriesExhausted) as info:
        call_with_retries(flaky, RetryPolicy(retries=2, backoff_s=0), "https://x/f.bin", sleep=lambda s: None)
    assert flaky.calls == 3 and info.value.attempts == 3 and info.value.reason == "HTTP 503"
    assert str(info.value) == "https://x/f.bin: failed after 3 attempt(s), last error: HTTP 503"
    assert isinstance(info.value.__cause__, Retryable)


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        call_with_retries(broken, RetryPolicy(retries=3), "x", sleep=lambda s: None)
    assert calls == [1]


def test_the_secret_is_redacted_from_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-RETRY-SECRET-1234"
    logger = logging.getLogger("segsam")
    propagate, logger.propagate = logger.propagate, True  # let caplog see segsam's records
    try:
        with caplog.at_level(logging.WARNING, logger="segsam.retry"), pytest.raises(RetriesExhausted) as info:
            call_with_retries(
                Flaky(5, reason=f"HTTP 500 for key {secret}"),
                RetryPolicy(retries=1, backoff_s=0),
                f"request with {secret}",
                secret=secret,
                sleep=lambda s: None,
            )
    finally:
        logger.propagate = propagate
    assert "retrying" in caplog.text and "***" in caplog.text
    assert secret not in caplog.text and secret not in str(info.value)
    assert redact("a key b key", "key") == "a *** b ***" and redact("text", None) == "text"
