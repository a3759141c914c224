"""When to retry, and how long to wait first.

Retried: HTTP 408, 429 and 5xx, and failures with no answer at all (connection refused or
reset, timeouts). Not retried: every other 4xx, since the same body would fail the same way.
A retry sends the same body, with the same ``message_id`` on every event, so the server
stores each event once however many attempts it takes.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._exceptions import APIError, RateLimitedError, TidingsConnectionError, TidingsError

__all__ = ["RetryPolicy", "is_retryable", "parse_retry_after", "retry_after_of"]

RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Jittered, capped exponential backoff that honours ``Retry-After``.

    The wait before retry number ``n`` (``n = 0`` for the first retry) is a uniform random
    draw in ``[0, min(max_backoff, backoff * 2**n)]`` ("full jitter", so many clients
    recovering at once do not retry in step), but never less than the server's
    ``Retry-After`` (itself capped at ``max_retry_after``).

    ``max_retries`` counts retries after the first attempt; ``None`` means retry for as long as
    the client lives (the batching client uses this with a spool, where nothing is held in memory).
    """

    max_retries: int | None = 10
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError("max_retries must be >= 0 or None")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must be >= 0")

    def should_retry(self, retries_done: int, error: TidingsError) -> bool:
        """Whether to try again after ``retries_done`` retries ended in ``error``."""
        if self.max_retries is not None and retries_done >= self.max_retries:
            return False
        return is_retryable(error)

    def delay(
        self,
        retries_done: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before the next attempt; ``rand`` draws from ``[0, 1)``."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(retries_done, 62))
        wait = ceiling * rand()
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


def is_retryable(error: TidingsError) -> bool:
    """True for no answer, 408, 429 and 5xx."""
    if isinstance(error, TidingsConnectionError):
        return True
    if isinstance(error, APIError):
        return error.status in RETRYABLE_STATUSES or error.status >= 500
    return False


def retry_after_of(error: TidingsError) -> float | None:
    """The ``Retry-After`` the server sent with ``error`` (429 or 503), in seconds."""
    if isinstance(error, RateLimitedError):
        return error.retry_after
    if isinstance(error, APIError):
        return parse_retry_after(error.headers)
    return None


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], dt.datetime] | None = None
) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date."""
    value = None
    for key, v in headers.items():
        if key.lower() == "retry-after":
            value = v.strip()
            break
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now() if now else dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())
