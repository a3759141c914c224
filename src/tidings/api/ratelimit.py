"""Rate limits at the HTTP edge: per API key and per client address (docs/security.md).

A pure ASGI middleware that runs after request ids and before every route, the raw
ingest routes included; a refused request is answered ``429 rate_limited`` with
``Retry-After`` before its body is read. The API key is the ``Authorization`` header
value (Bearer key or Segment Basic write key), kept only as its SHA-256 digest; it is
counted before it is checked, so an unknown key is limited like a known one. Limits are
per process.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.api.errors import error_response
from tidings.domain.errors import RateLimited
from tidings.domain.ratelimit import TokenBucketLimiter
from tidings.settings import Settings

__all__ = ["EXEMPT_PATHS", "RateLimitMiddleware", "client_address", "with_rate_limits"]

Clock = Callable[[], float]

# Never limited: liveness probes and the API description.
EXEMPT_PATHS = frozenset({"/api/health", "/openapi.json", "/docs"})


def client_address(scope: Scope, *, trust_forwarded_for: bool) -> str:
    """The peer address, or the last ``X-Forwarded-For`` entry when that is trusted: the
    address the nearest proxy saw, which a client cannot choose whether the proxy
    replaces the header or appends to it."""
    if trust_forwarded_for:
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                last = bytes(value).rsplit(b",", 1)[-1].strip()
                if last:
                    return last.decode("latin-1")
                break
    client: tuple[str, int] | None = scope.get("client")
    return client[0] if client else ""


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value)
    return None


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: float,
        per_ip: float,
        burst: float,
        trust_forwarded_for: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        self.app = app
        self.by_key = TokenBucketLimiter(per_key, max(1.0, per_key * burst)) if per_key else None
        self.by_ip = TokenBucketLimiter(per_ip, max(1.0, per_ip * burst)) if per_ip else None
        self.trust_forwarded_for = trust_forwarded_for
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        now = self.clock()
        refused: RateLimited | None = None
        if self.by_ip is not None:
            address = client_address(scope, trust_forwarded_for=self.trust_forwarded_for)
            allowed, wait = self.by_ip.take(address, now)
            if not allowed:
                refused = RateLimited(
                    f"Too many requests from this address; retry after {_seconds(wait)} s.",
                    retry_after=_seconds(wait),
                )
        if refused is None and self.by_key is not None:
            authorization = _authorization(scope)
            if authorization is not None:
                allowed, wait = self.by_key.take(hashlib.sha256(authorization).digest(), now)
                if not allowed:
                    refused = RateLimited(
                        f"Too many requests for this API key; retry after {_seconds(wait)} s.",
                        retry_after=_seconds(wait),
                    )
        if refused is None:
            await self.app(scope, receive, send)
            return
        response = error_response(Request(scope), refused)
        await response(scope, receive, send)


def _seconds(wait: float) -> int:
    """``Retry-After`` in whole seconds, rounded up and at least 1."""
    return max(1, math.ceil(wait - 1e-9))  # 1.0000000001 is float noise, not 2 s


def with_rate_limits(app: ASGIApp, settings: Settings, clock: Clock = time.monotonic) -> ASGIApp:
    """``app`` behind the configured limits, or ``app`` itself when both are off."""
    if not settings.rate_limit_per_key and not settings.rate_limit_per_ip:
        return app
    return RateLimitMiddleware(
        app,
        per_key=settings.rate_limit_per_key,
        per_ip=settings.rate_limit_per_ip,
        burst=settings.rate_limit_burst,
        trust_forwarded_for=settings.trust_forwarded_for,
        clock=clock,
    )
