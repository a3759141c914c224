"""CORS: web pages on other origins may call the routes a public key may call.

Which routes: a path rule (:func:`is_public_path`), so that a public-key route gets CORS
the moment it exists: the ingest writes of ``/api/client`` (events, identify, alias,
devices), the in-app notifications (``/api/client/notifications``, ``…/{id}``), the
preference centre (``/api/client/users/me``, ``/api/client/subscriptions/me``) and the
Segment API ``/v1/*`` (analytics.js and its settings document). Every other route (the
secret-key API, the admin UI) sends no CORS headers, so a browser keeps other origins
from reading it, and answers no preflight, so it refuses to send them non-simple requests.

The outermost ASGI layer (:class:`CorsMiddleware`) does what needs no key:

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) on a
  public path is answered here, ``204`` with the allowed methods and headers and
  ``Access-Control-Max-Age``. A preflight carries no key, so it names no project: it is
  refused (``403 origin_not_allowed``) only when no project allows the origin (each
  project's list, read at most every ``key_cache_ttl`` seconds); on a server with one
  project that is exactly that project's list.
- Any other request with an ``Origin`` to a public path gets
  ``Access-Control-Allow-Origin: <that origin>`` (and ``Vary: Origin``) on its answer,
  errors included, and ``Access-Control-Expose-Headers: X-Request-Id, Retry-After``,
  so that a page can read why it was refused and which request to quote.

Once the key is known, the route calls :func:`check_origin`: a project with a list of
allowed origins refuses others (``403 origin_not_allowed``, readable by the page), and a
secret key sent from a web page is refused (``403 secret_key_in_browser``) with no CORS
headers at all, so that the page cannot use it. Requests without ``Origin`` (servers,
SDKs, ``curl``) are not affected: CORS is a browser's rule, not authentication.

Cost on the hot ingest path: one set lookup of the path, one pass over the header list
when the path is public, and one dict lookup in the route; nothing when there is no
``Origin`` header (servers and the benchmarks send none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.errors import DATABASE_UNAVAILABLE, problem_response
from tidings.domain.auth import Scope as KeyScope
from tidings.domain.errors import InvalidRequest, PermissionDenied
from tidings.domain.ids import new_request_id
from tidings.domain.origins import normalise_origin, origin_allowed

if TYPE_CHECKING:
    from tidings.api.auth import AuthContext

__all__ = [
    "ALLOW_HEADERS",
    "ALLOW_METHODS",
    "EXPOSE_HEADERS",
    "MAX_AGE",
    "CorsMiddleware",
    "PreflightOrigins",
    "check_origin",
    "is_public_path",
    "withhold_cors",
]

logger = logging.getLogger(__name__)

# Exact paths, and prefixes (a trailing slash: the paths under it).
PUBLIC_PATHS = frozenset(
    {
        "/api/client/events",
        "/api/client/identify",
        "/api/client/alias",
        "/api/client/devices",
        "/api/client/notifications",
        "/api/client/users/me",
        "/api/client/subscriptions/me",
        "/sourceConfig",  # RudderStack's JavaScript SDK (api/rudderstack_config.py)
        "/sourceConfig/",
    }
)
PUBLIC_PREFIXES = ("/v1/", "/api/client/notifications/")

ALLOW_METHODS = "GET, POST, PUT, PATCH, OPTIONS"
ALLOW_HEADERS = ", ".join(
    [
        "Authorization",
        "Content-Type",
        "Spotzee-Version",
        "x-spotzee-client-type",
        "Idempotency-Key",
        "x-anonymous-id",
        "x-external-id",
        "X-Spotzee-User-Token",
        "X-Tidings-User-Token",
        "X-Retry-Count",  # analytics.js, on a retry
        # RudderStack's JavaScript SDK: on every call, and on a retry
        "AnonymousId",
        "SentAt",
        "Rsa-Retry-Attempt",
        "Rsa-Retry-Reason",
        "Rsa-Since-Last-Attempt",
        "Rsa-Since-First-Attempt",
        "Rsa-Recovered",
    ]
)
EXPOSE_HEADERS = "X-Request-Id, Retry-After"
MAX_AGE = "7200"  # seconds; Chromium caps a preflight's cache at 2 hours

_NO_CORS = "cors_withheld"  # set in scope["state"] by check_origin: answer without CORS
_EXPOSE = (b"access-control-expose-headers", EXPOSE_HEADERS.encode())
_VARY = (b"vary", b"Origin")
_PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", ALLOW_METHODS.encode()),
    (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
    (b"access-control-max-age", MAX_AGE.encode()),
    _VARY,
]


def is_public_path(path: str) -> bool:
    """Whether a public key may call ``path`` (and so web pages on other origins may)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def withhold_cors(scope: Scope) -> None:
    """Answer this request without CORS headers: a page shall not read it."""
    scope.setdefault("state", {})[_NO_CORS] = True


def check_origin(scope: Scope, context: AuthContext, origin: str | None) -> None:
    """Refuse a request from a web page that its key may not be used from.

    ``origin``: the request's ``Origin`` header (None: not from a page, nothing to
    check). A page on Tidings' own origin is not checked (the API docs, the admin UI).
    """
    if origin is None or _same_origin(scope, origin):
        return
    if context.key.scope is KeyScope.SECRET:
        withhold_cors(scope)
        raise PermissionDenied(
            f"A secret key was sent from a web page (Origin: {origin[:100]}). A secret key "
            "must never be in a page: use the project's public key (pk_…), and revoke "
            "this secret key if the page was published.",
            code="secret_key_in_browser",
        )
    allowed = context.project.allowed_origins
    if allowed is not None and not origin_allowed(origin, allowed):
        raise PermissionDenied(
            f"This project's public key may not be used from {origin[:100]}: it is not "
            "one of the project's allowed origins (tidings project update "
            "--allowed-origins).",
            code="origin_not_allowed",
        )


def _same_origin(scope: Scope, origin: str) -> bool:
    host = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not host:
        return False
    try:
        return normalise_origin(origin) == normalise_origin(f"{scope.get('scheme')}://{host}")
    except InvalidRequest:  # an Origin or Host that is not one: not the same
        return False


class PreflightOrigins:
    """Whether some project allows an origin, from every project's list, re-read at most
    every ``ttl`` seconds (as API keys are: ``key_cache_ttl``)."""

    def __init__(
        self,
        load: Callable[[], list[tuple[str, ...] | None]],
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.clock = clock
        self._any = True
        self._patterns: tuple[str, ...] = ()
        self._loaded_at: float | None = None

    async def allows(self, origin: str) -> bool:
        now = self.clock()
        if self._loaded_at is None or now >= self._loaded_at + self.ttl:
            try:
                lists = await run_in_threadpool(self._load)
            except DATABASE_UNAVAILABLE as exc:
                # A preflight only decides whether the browser sends the request, which
                # is checked with its key; answering from the last list (or allowing, if
                # there was none) keeps pages working while the database is away.
                logger.warning("allowed origins could not be read for a preflight: %s", exc)
                return self._any or origin_allowed(origin, self._patterns)
            self._any = not lists or any(item is None for item in lists)
            self._patterns = tuple({p: None for item in lists if item for p in item})
            self._loaded_at = now
        return self._any or origin_allowed(origin, self._patterns)


class CorsMiddleware:
    """Answers preflights of public paths and adds CORS headers to their answers."""

    def __init__(self, app: ASGIApp, origins: PreflightOrigins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)  # lifespan, websockets, other routes
            return
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        if origin is None:  # not from a page: the ingest benchmarks' (and servers') path
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        ):
            await self._preflight(scope, receive, send, origin)
            return
        allow = (b"access-control-allow-origin", origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and not scope.get("state", {}).get(
                _NO_CORS
            ):
                message["headers"] = [*message.get("headers", []), allow, _EXPOSE, _VARY]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, receive: Receive, send: Send, origin: bytes) -> None:
        text = origin.decode("latin-1")
        if _same_origin(scope, text) or await self.origins.allows(text):
            headers = [(b"access-control-allow-origin", origin), *_PREFLIGHT_HEADERS]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        request_id = new_request_id()
        response = problem_response(
            request_id,
            403,
            "origin_not_allowed",
            f"No project allows requests from {text[:100]}: add it to the project's allowed "
            "origins (tidings project update --allowed-origins).",
            headers={"X-Request-Id": request_id},
        )
        await response(scope, receive, send)
