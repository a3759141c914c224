"""The HTTP/1.1 protocol `serve` and `api` run: uvicorn's, plus a timeout on headers.

uvicorn closes a connection that stays idle between requests (its keep-alive timeout),
but not one that sends a request's headers a byte at a time, nor one that connects and
sends nothing: a few hundred such connections hold sockets and memory for ever. Here a
connection must finish each request's headers within ``header_timeout`` seconds of its
first byte (or of connecting), or it is closed. Bodies are timed at the ASGI level
(``api/middleware.py``, ``TIDINGS_BODY_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["with_header_timeout"]


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers were too slow")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def with_header_timeout(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class, closing connections whose request headers take
    longer than ``seconds`` (pass it as ``uvicorn.run(http=...)``)."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": seconds})
