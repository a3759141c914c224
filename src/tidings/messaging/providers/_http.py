"""What the HTTP/1.1 provider adapters share: a pooled client and the classification of
answers.

The client is aiohttp's: one session per adapter instance keeps its connections open
between sends (an adapter sends many messages), at most ``data.max_connections`` (100).
aiohttp costs about a tenth of the CPU per request that httpx's connection pool does
under many concurrent sends (docs/benchmarks.md, "Provider adapters"), and the adapters'
target is 2,000 sends/s per worker. APNs, which needs HTTP/2, uses httpx with h2.

An answer is classified by its status: 2xx accepted; 408, 425, 429 and 5xx transient
(with the provider's ``Retry-After`` when it gave one); any other status permanent.
Timeouts and connection errors are transient: the delivery worker decides what a retry
may cause.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tidings.domain.channels import DeliveryResult, Outcome
from tidings.messaging.providers._addresses import GuardedResolver

__all__ = [
    "TRANSIENT_STATUSES",
    "Answer",
    "HttpClient",
    "classify_exception",
    "classify_status",
    "retry_after_of",
]

TRANSIENT_STATUSES = frozenset({408, 425, 429})
_REASON_CHARS = 300
MAX_ANSWER = 1024 * 1024  # bytes of an answer read; a provider's is a few hundred


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive lookups
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when it is not one)."""
        try:
            value = msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class HttpClient:
    """A pooled HTTP/1.1 client for one adapter: ``data.timeout`` seconds (10) per
    request, ``data.max_connections`` (100) open at once. Redirects are not followed: a
    provider's API does not redirect, and a webhook's target should not send us elsewhere.
    The session is made on first use, inside the event loop that sends."""

    def __init__(self, data: Mapping[str, Any], *, guard: bool = False) -> None:
        """``guard``: connect only to globally routable addresses (webhooks:
        domain/addresses.py); a refused one raises ``BlockedAddress`` (in aiohttp's error)."""
        self.guard = guard
        self.timeout = float(data.get("timeout") or 10.0)
        self.max_connections = int(data.get("max_connections") or 100)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # A session belongs to one event loop: an adapter used from another loop (a
        # worker restarting its loop) opens a new one; the old loop's connections went
        # with it.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    limit_per_host=0,
                    resolver=GuardedResolver() if self.guard else None,
                ),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,  # no proxies from the environment: the provider row decides
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Answer:
        session = self._get_session()
        if form is not None:
            skip: tuple[str, ...] = ()
        elif headers and any(k.lower() == "content-type" for k in headers):
            skip = ()
        else:
            skip = ("Content-Type",)
        async with session.request(
            method,
            url,
            headers=headers,
            data=form if form is not None else body,
            allow_redirects=False,
            skip_auto_headers=skip,
        ) as response:
            length = response.content_length
            if length is not None and length < MAX_ANSWER:
                # The usual answer: small, its length given. One read.
                return Answer(response.status, response.headers, await response.read())
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(65_536):
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_ANSWER:  # enough to classify; the connection is dropped
                    break
            return Answer(response.status, response.headers, b"".join(chunks)[:MAX_ANSWER])

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def retry_after_of(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = headers.get("retry-after") or headers.get("Retry-After")
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


def _reason(answer: Answer, prefix: str) -> str:
    text = answer.body.decode("utf-8", "replace").strip().replace("\n", " ")
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS] + "…"
    return f"{prefix}: HTTP {answer.status}" + (f": {text}" if text else "")


def classify_status(
    answer: Answer, prefix: str, *, message_id: str | None = None
) -> DeliveryResult:
    status = answer.status
    if 200 <= status < 300:
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id=message_id)
    reason = _reason(answer, prefix)
    if status in TRANSIENT_STATUSES or status >= 500:
        return DeliveryResult(
            Outcome.TRANSIENT, reason=reason, retry_after=retry_after_of(answer.headers)
        )
    return DeliveryResult(Outcome.PERMANENT, reason=reason)


def classify_exception(exc: BaseException, prefix: str) -> DeliveryResult:
    """Timeouts, connection and transport errors: transient. Anything else (a bug, a
    value the provider cannot take): permanent, since sending again would fail alike."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return DeliveryResult(Outcome.TRANSIENT, reason=f"{prefix}: timed out")
    transient = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
    if isinstance(exc, transient):
        return DeliveryResult(Outcome.TRANSIENT, reason=f"{prefix}: {type(exc).__name__}: {exc}")
    return DeliveryResult(Outcome.PERMANENT, reason=f"{prefix}: {type(exc).__name__}: {exc}")
