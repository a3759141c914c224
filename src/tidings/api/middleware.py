"""Request ids: every response carries ``X-Request-Id: req_<ULID>``.

A pure ASGI middleware (no per-request task or body buffering) so that the hot ingest
path pays a few microseconds for it. Anything unhandled below becomes a 500 in the
problem envelope with the same request id, logged once; a client that disconnects
mid-body is logged quietly.

``body_timeout``: the seconds a request may take to send its whole body, counted from
the first read of it (``TIDINGS_BODY_TIMEOUT``). A slower body is answered 408 and the
connection closed, so a client trickling bytes cannot hold a request open for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.api.errors import problem_response
from tidings.domain.ids import new_request_id

__all__ = ["BodyTimeout", "RequestIdMiddleware"]

logger = logging.getLogger(__name__)


class BodyTimeout(HTTPException):
    """The request body did not arrive within ``body_timeout`` seconds: 408 (an HTTP
    exception, so that FastAPI's body parsing passes it on rather than answering 400)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(408, f"The request body did not arrive within {timeout:g} seconds.")


class _BodyClock:
    """Times the request bodies being read with one sweep per interval, not a timer per
    request (``asyncio.timeout`` around each read cost ~25 µs a request on the ingest
    path, a timer per request ~15 µs; adding to a set and removing costs well under one).
    A body whose deadline has passed is cut off by the next sweep: at most ``interval``
    seconds late."""

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.timeout = timeout
        self.clock = clock
        self.interval = min(1.0, timeout / 2)
        self.reading: set[_TimedBody] = set()
        self._sweeper: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None

    def watch(self, body: _TimedBody) -> None:
        self.reading.add(body)
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper[0] is not loop:
            self._sweeper = (loop, loop.call_later(self.interval, self._sweep))

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.clock()
        for body in [b for b in self.reading if b.deadline <= now]:
            self.reading.discard(body)
            body.expire()
        if self.reading:
            loop = asyncio.get_running_loop()
            self._sweeper = (loop, loop.call_later(self.interval, self._sweep))


class _TimedBody:
    """``receive`` that raises :class:`BodyTimeout` once the body has taken longer than
    the clock's timeout from its first read (messages after the body's last part are not
    timed: the server sends ``http.disconnect`` only when the client leaves). Expiring
    during a read cancels that read; between reads, the next read raises."""

    __slots__ = ("_receive", "clock", "deadline", "done", "late", "task", "waiting")

    def __init__(self, receive: Receive, clock: _BodyClock) -> None:
        self._receive = receive
        self.clock = clock
        self.deadline = 0.0
        self.task: asyncio.Task[Any] | None = None
        self.waiting = False
        self.late = False
        self.done = False

    def expire(self) -> None:
        self.late = True
        if self.waiting and self.task is not None:
            self.task.cancel()

    def forget(self) -> None:
        self.done = True
        self.clock.reading.discard(self)

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        if self.task is None:
            self.task = asyncio.current_task()
            self.deadline = self.clock.clock() + self.clock.timeout
            self.clock.watch(self)
        if self.late:
            raise BodyTimeout(self.clock.timeout)
        self.waiting = True
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.late or self.task is None:
                raise
            self.task.uncancel()
            raise BodyTimeout(self.clock.timeout) from None
        finally:
            self.waiting = False
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.forget()
        return message


class RequestIdMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        body_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self._bodies = _BodyClock(body_timeout, clock) if body_timeout else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        body = None
        if self._bodies is not None:
            body = _TimedBody(receive, self._bodies)
            receive = body.receive
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            # No database stores NUL in text: refused here for every parameter and route.
            await problem_response(
                request_id,
                400,
                "parameter_invalid_format",
                "The URL holds a NUL character (%00); no parameter may.",
            )(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away mid-body: nobody to answer, nothing wrong here. One
            # quiet line (anyone can do this, so no traceback at ERROR to flood the log).
            logger.info(
                "client disconnected before sending its whole body: %s %s (%s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
        except BodyTimeout as exc:
            logger.info(
                "%s %s %s (%s)", exc.detail, scope.get("method"), scope.get("path"), request_id
            )
            if not started:
                await problem_response(
                    request_id,
                    408,
                    "request_timeout",
                    exc.detail,
                    headers={"Connection": "close"},
                )(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error in %s %s (%s)", scope.get("method"), scope.get("path"), request_id
            )
            if not started:  # FastAPI's routes have answered already (api/app.py)
                response = problem_response(
                    request_id, 500, "internal_error", "An internal error occurred; it was logged."
                )
                await response(scope, receive, send_with_id)
        finally:
            if body is not None:  # answered without reading the whole body: not timed
                body.forget()
