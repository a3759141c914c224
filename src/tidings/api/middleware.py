"""Request ids: every response carries ``X-Request-Id: req_<ULID>``.

A pure ASGI middleware (no per-request task or body buffering) so that the hot ingest
path pays a few microseconds for it. Anything unhandled below becomes a 500 in the
problem envelope with the same request id.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.errors import problem_response
from tidings.domain.ids import new_request_id

__all__ = ["RequestIdMiddleware"]

logger = logging.getLogger(__name__)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error in %s %s (%s)", scope.get("method"), scope.get("path"), request_id
            )
            if started:
                raise
            response = problem_response(
                request_id, 500, "internal_error", "An internal error occurred; it was logged."
            )
            await response(scope, receive, send_with_id)
