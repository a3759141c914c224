"""What the HTTP provider adapters share: a pooled client and the classification of answers.

One ``httpx.AsyncClient`` per adapter instance keeps its connections open between sends
(an adapter sends many messages), bounded by ``data.max_connections``. An answer is
classified by its status: 2xx accepted; 408, 425, 429 and 5xx transient (with the
provider's ``Retry-After`` when it gave one); any other status permanent. Timeouts and
connection errors are transient: the delivery worker decides what a retry may cause.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tidings.domain.channels import DeliveryResult, Outcome

__all__ = [
    "TRANSIENT_STATUSES",
    "classify_exception",
    "classify_status",
    "make_client",
    "reason_of",
    "retry_after_of",
]

TRANSIENT_STATUSES = frozenset({408, 425, 429})
_REASON_CHARS = 300


def make_client(data: Mapping[str, Any], *, http2: bool = False) -> httpx.AsyncClient:
    """A pooled client: ``data.timeout`` seconds (10) per request, ``data.max_connections``
    (100) open at once. Redirects are not followed: a provider's API does not redirect,
    and a webhook's target should not send us elsewhere."""
    timeout = float(data.get("timeout") or 10.0)
    max_connections = int(data.get("max_connections") or 100)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        http1=not http2,
        http2=http2,
        trust_env=False,  # no proxy settings from the environment: the provider row decides
    )


def retry_after_of(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def reason_of(response: httpx.Response, prefix: str) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS] + "…"
    return f"{prefix}: HTTP {response.status_code}" + (f": {text}" if text else "")


def classify_status(
    response: httpx.Response, prefix: str, *, message_id: str | None = None
) -> DeliveryResult:
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id=message_id)
    reason = reason_of(response, prefix)
    if status in TRANSIENT_STATUSES or status >= 500:
        return DeliveryResult(
            Outcome.TRANSIENT, reason=reason, retry_after=retry_after_of(response.headers)
        )
    return DeliveryResult(Outcome.PERMANENT, reason=reason)


def classify_exception(exc: Exception, prefix: str) -> DeliveryResult:
    """Timeouts and transport errors: transient. Anything else (a bug, a value the provider
    cannot take): permanent, since sending it again would fail the same way."""
    if isinstance(exc, httpx.TimeoutException):
        return DeliveryResult(
            Outcome.TRANSIENT, reason=f"{prefix}: timed out ({type(exc).__name__})"
        )
    if isinstance(exc, httpx.TransportError | OSError):
        return DeliveryResult(Outcome.TRANSIENT, reason=f"{prefix}: {type(exc).__name__}: {exc}")
    return DeliveryResult(Outcome.PERMANENT, reason=f"{prefix}: {type(exc).__name__}: {exc}")
