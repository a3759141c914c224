"""The application factory: FastAPI for documented JSON APIs, raw routes for ingest."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tidings import __version__
from tidings.admin import admin_app
from tidings.api.auth import KeyCache
from tidings.api.campaigns import campaigns_router
from tidings.api.cors import CorsMiddleware, PreflightOrigins
from tidings.api.errors import (
    DATABASE_UNAVAILABLE,
    database_unavailable,
    error_response,
    problem_response,
    request_id_of,
)
from tidings.api.inbound import inbound_router
from tidings.api.ingest import IngestRoutes
from tidings.api.journeys import journeys_router
from tidings.api.lists import lists_router
from tidings.api.middleware import RequestIdMiddleware
from tidings.api.notifications import notifications_router
from tidings.api.openapi import add_ingest_paths, add_segment_paths
from tidings.api.providers import providers_router
from tidings.api.ratelimit import with_rate_limits
from tidings.api.reporting import reporting_router
from tidings.api.rudderstack_config import rudderstack_config_router
from tidings.api.schema import schema_router
from tidings.api.segment import SegmentRoutes
from tidings.api.segment_settings import segment_settings_router
from tidings.api.subscriptions import subscriptions_router
from tidings.api.templates import templates_router
from tidings.api.tracking import tracking_router
from tidings.api.users import users_router
from tidings.bootstrap import Services
from tidings.domain.errors import FieldError, TidingsError
from tidings.settings import Settings

__all__ = ["TidingsApp", "create_app"]

_encode = msgspec.json.Encoder().encode

Endpoint = Callable[[Request], Awaitable[Response]]

_HTTP_CODES = {
    400: "parameter_invalid_format",
    401: "authentication_required",
    403: "permission_denied",
    404: "resource_missing",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


class TidingsApp:
    """The ASGI entry point: request ids, rate limits, then ingest routes directly, else FastAPI.

    The ingest routes skip FastAPI's middleware and routing layers, which cost about as
    much as the rest of a single-event request (see docs/benchmarks.md).
    """

    def __init__(
        self,
        fastapi: FastAPI,
        fast_routes: dict[tuple[str, str], Endpoint],
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        origins: PreflightOrigins | None = None,
        allowed: Callable[[str], set[str]] | None = None,
    ) -> None:
        self.fastapi = fastapi
        self._allowed = allowed
        self.state = fastapi.state
        self._fast = fast_routes
        self._fast_paths = {path for _, path in fast_routes}
        app = RequestIdMiddleware(
            with_rate_limits(self._dispatch, settings, clock),
            body_timeout=settings.body_timeout or None,
        )
        # Outermost, so that every answer of a public route carries CORS headers, the 429
        # and 500 answers included (api/cors.py).
        self._app = CorsMiddleware(app, origins) if origins is not None else app

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._fast.get((scope.get("method", ""), scope.get("path", "")))
        if endpoint is None or scope["type"] != "http":
            path = scope.get("path")
            if scope["type"] == "http" and path in self._fast_paths:
                allowed = {m for m, p in self._fast if p == path}
                allowed |= self._allowed(path) if self._allowed else set()
                if scope.get("method") not in allowed:  # no route of FastAPI's either
                    request = Request(scope, receive)
                    await method_not_allowed(request, allowed)(scope, receive, send)
                    return
            await self.fastapi(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except DATABASE_UNAVAILABLE as exc:  # e.g. an Idempotency-Key lookup: 503, not 500
            response = error_response(request, database_unavailable(exc))
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.fastapi(scope, receive, send)
            return
        await self._app(scope, receive, send)


_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class AllowedMethods:
    """Every method some route answers at a path, from the OpenAPI document (which lists
    the ingest routes too); Starlette's own 405 names only the first route that matched."""

    def __init__(self, schema: Callable[[], dict[str, Any]]) -> None:
        self._schema = schema
        self._paths: list[tuple[re.Pattern[str], set[str]]] | None = None

    def __call__(self, path: str) -> set[str]:
        if self._paths is None:
            self._paths = [
                (
                    re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$"),
                    {m.upper() for m in operations if m in _OPERATIONS},
                )
                for template, operations in self._schema().get("paths", {}).items()
            ]
        found: set[str] = set()
        for pattern, methods in self._paths:
            if pattern.match(path):
                found |= methods
        return found


def method_not_allowed(request: Request, allowed: set[str]) -> Response:
    listed = ", ".join(sorted(allowed))
    return problem_response(
        request_id_of(request),
        405,
        "method_not_allowed",
        f"{request.method} is not allowed on {request.url.path}; use {listed}.",
        headers={"Allow": listed},
    )


def create_app(
    services: Services,
    *,
    manage_lifecycle: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> TidingsApp:
    """The ASGI app over ``services``; it starts and stops them unless told not to.

    ``clock`` (monotonic seconds) drives the rate limits; tests pass a fake one.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            services.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                services.stop()

    app = FastAPI(
        title="Tidings",
        version=__version__,
        description="Customer engagement platform: client API (Spotzee-compatible).",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    keys = KeyCache(
        services.projects,
        services.settings.key_cache_ttl,
        lookup_timeout=services.settings.key_lookup_timeout,
    )
    app.state.keys = keys
    ingest = IngestRoutes(services, keys)
    app.state.ingest = ingest

    fast_routes: dict[tuple[str, str], Endpoint] = {
        ("POST", "/api/client/events"): ingest.events,
        ("POST", "/api/client/identify"): ingest.identify,
        ("POST", "/api/client/alias"): ingest.alias,
        ("POST", "/api/client/devices"): ingest.devices,
        ("PATCH", "/api/client/users"): ingest.users_patch,
        ("POST", "/api/client/users/batch"): ingest.users_batch,
        **SegmentRoutes(services, keys).endpoints(),  # /v1: the Segment tracking API
    }
    if services.messaging is not None:
        # Before the users router: its GET /users/{external_id} would take /users/me.
        app.include_router(subscriptions_router(services, keys))
        app.include_router(providers_router(services, keys))
        app.include_router(campaigns_router(services, keys))
        app.include_router(templates_router(services, keys))
    app.include_router(reporting_router(services, keys))  # before /users/{external_id}
    messaging = services.messaging
    if messaging is not None and services.tracker is not None:
        app.include_router(
            tracking_router(services, services.tracker, unsubscribe=messaging.unsubscribe)
        )
        app.include_router(
            inbound_router(
                messaging.inbound_provider,
                lambda project_id, phone: messaging.subscriptions.unsubscribe_channel_by_phone(
                    project_id, phone
                ),
                public_url=services.settings.public_url,
            )
        )
    if services.notifications is not None:
        app.include_router(notifications_router(services, keys, services.notifications))
    app.include_router(users_router(services, keys))
    app.include_router(lists_router(services, keys))
    app.include_router(schema_router(services, keys))
    app.include_router(segment_settings_router(keys))  # GET /v1/projects/{key}/settings
    app.include_router(rudderstack_config_router(keys))  # GET /sourceConfig/
    app.include_router(journeys_router(services, keys))
    app.mount("/admin", admin_app(services))  # the admin web UI (docs/admin.md)

    @app.get("/api/health", tags=["operations"], summary="Liveness and processing lag")
    async def health() -> Response:
        pending = await run_in_threadpool(services.log.pending)
        consumer = services.consumer
        child = services.worker_child
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "log_lag": pending,
            # Whether this server applies the log: in this process, or in its child.
            "worker": consumer is not None or (child is not None and child()),
            "worker_mode": "thread" if consumer else "process" if child else None,
            "processed": consumer.processed if consumer else None,
            "commits": services.committer.commits,
            "committed_items": services.committer.committed_items,
        }
        return Response(_encode(body), media_type="application/json")

    @app.exception_handler(TidingsError)
    async def _tidings_error(request: Request, exc: TidingsError) -> Response:
        return error_response(request, exc)

    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        return error_response(request, database_unavailable(exc))

    for cls in DATABASE_UNAVAILABLE:  # the database is down or does not answer: 503
        app.add_exception_handler(cls, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Starlette's last-resort handler: the same envelope as every error (the request
        # id middleware logs the exception once, when Starlette re-raises it).
        return problem_response(
            request_id_of(request),
            500,
            "internal_error",
            "An internal error occurred; it was logged.",
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            FieldError(
                param=".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path")),
                code="parameter_invalid_format",
                message=str(err.get("msg", "invalid")),
            )
            for err in exc.errors()
        ]
        first = errors[0] if errors else FieldError("", "parameter_invalid_format", "invalid")
        return problem_response(
            request_id_of(request),
            400,
            "parameter_invalid_format",
            f"{first.param}: {first.message}",
            param=first.param,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allowed = allowed_methods(request.url.path)
            if not allowed:  # a route the OpenAPI document leaves out (/docs)
                allowed = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",")}
            return method_not_allowed(request, allowed - {""})
        code = _HTTP_CODES.get(exc.status_code, "internal_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path}."
        return problem_response(
            request_id_of(request), exc.status_code, code, message, headers=dict(exc.headers or {})
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            add_ingest_paths(schema)
            add_segment_paths(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    origins = PreflightOrigins(
        services.projects.all_allowed_origins, services.settings.key_cache_ttl
    )
    allowed_methods = AllowedMethods(openapi)
    return TidingsApp(
        app, fast_routes, services.settings, clock=clock, origins=origins, allowed=allowed_methods
    )
