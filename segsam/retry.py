"""Retrying transient failures of a remote server: one policy for every client in the package.

Used by the dataset downloader (:mod:`segsam.data.download`, config
``dataset.download.{retries, backoff_s, timeout_s}``) and by the LLM and
embedding clients (:mod:`segsam.text`, config ``text.llm.{max_retries,
timeout_s}``). The policy:

* waits ``backoff_s * 2**n`` seconds before retry ``n + 1`` (exponential
  back-off), plus up to ``backoff_s`` of uniform jitter when ``jitter`` is on
  (many parallel clients then do not retry in lock-step);
* honours the server's ``Retry-After`` instead, in seconds (``"7"``,
  ``"0.25"``) or as an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``);
* caps every wait at ``max_backoff_s``, ``Retry-After`` included.

A client turns each transient failure of one attempt into :class:`Retryable`;
:func:`call_with_retries` waits and tries again, and raises
:class:`RetriesExhausted` when the attempts are used up, which the client turns
into its own one-line error. Messages never carry the secret (an API key)
passed to :func:`call_with_retries`.

This module imports no stage of the package.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "RetriesExhausted",
    "RetryPolicy",
    "Retryable",
    "call_with_retries",
    "redact",
    "retry_after_seconds",
]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        retries: Attempts after the first one (so ``retries + 1`` attempts).
        backoff_s: Wait before the first retry; doubles after each failure.
        max_backoff_s: Upper bound of one wait (also caps ``Retry-After``).
        timeout_s: Time-out of one request (the client applies it).
        jitter: Add up to ``backoff_s`` seconds of uniform jitter to the back-off
            (not to a server's ``Retry-After``).
        rng: Source of the jitter.
    """

    retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 120.0
    timeout_s: float = 60.0
    jitter: bool = False
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(
                f"back-off times must be >= 0, got backoff_s={self.backoff_s}, max_backoff_s={self.max_backoff_s}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    @property
    def attempts(self) -> int:
        """Attempts in all: the first one and the retries."""
        return self.retries + 1

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based).

        Args:
            attempt: The attempt that failed (0 = the first).
            retry_after: The server's ``Retry-After`` in seconds, if it sent one.

        Returns:
            ``retry_after`` when given, else ``backoff_s * 2**attempt`` (plus
            jitter when on); never below 0 or above ``max_backoff_s``.
        """
        if retry_after is not None:
            delay = retry_after
        else:
            delay = self.backoff_s * 2**attempt
            if self.jitter:
                delay += self.rng.uniform(0, self.backoff_s)
        return float(min(max(delay, 0.0), self.max_backoff_s))


class Retryable(Exception):
    """A failure of one attempt that is worth another (connection error, time-out, 429, 5xx).

    Attributes:
        retry_after: The server's ``Retry-After`` in seconds, if it sent one.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed with a :class:`Retryable` error.

    Attributes:
        attempts: How many attempts were made.
        reason: The last attempt's failure.
    """

    def __init__(self, what: str, attempts: int, reason: str) -> None:
        super().__init__(f"{what}: failed after {attempts} attempt(s), last error: {reason}")
        self.attempts = attempts
        self.reason = reason


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Args:
        value: The header's value (``None`` when absent).
        now: The current time as a Unix timestamp (default: ``time.time()``).

    Returns:
        Seconds to wait (an HTTP-date in the past gives 0), or ``None`` when the
        header is absent or unreadable (the policy's own back-off applies).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` in ``text`` by ``***``.

    Args:
        text: Text that may end up in a log or an error.
        secret: The API key (``None`` or empty: nothing to redact).

    Returns:
        The redacted text.
    """
    return text.replace(secret, "***") if secret else text


def call_with_retries(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    secret: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt`` until it returns, retrying its :class:`Retryable` failures.

    Any other exception of ``attempt`` passes through at once (a non-retryable
    HTTP status, a checksum error, ...).

    Args:
        attempt: Makes one attempt; raises :class:`Retryable` for a transient failure.
        policy: Retry count and waits.
        what: Names the request in log lines and errors (a URL, ``"class 'liver'"``).
        secret: Redacted from every message this function logs or raises.
        sleep: The wait between attempts (tests pass a fast or recording one).

    Returns:
        What ``attempt`` returns.

    Raises:
        RetriesExhausted: After ``policy.attempts`` failed attempts; chained to the last failure.
    """
    for number in range(policy.attempts):
        try:
            return attempt()
        except Retryable as err:
            reason = redact(str(err), secret)
            if number == policy.retries:
                raise RetriesExhausted(redact(what, secret), policy.attempts, reason) from err
            delay = policy.wait(number, err.retry_after)
            log.warning(
                "%s: %s on attempt %d of %d; retrying in %.2f s",
                redact(what, secret),
                reason,
                number + 1,
                policy.attempts,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
