"""What ``Client`` and ``AsyncClient`` share: options, connections, request headers, fork care.

The calls themselves are written once in ``_calls`` and turned into methods by each client,
which only differ in how an ``Op`` is sent: called or awaited.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Generic, Self, TypeVar

import httpx

from . import _fork
from ._http import DEFAULT_TIMEOUT, headers_for, normalize_base_url
from ._ops import Call
from ._retry import RetryPolicy

__all__ = ["AsyncClosing", "ClientBase"]

TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[TransportT, HttpT]):
    """Options and connections common to every client; ``HttpT`` is the httpx client used."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        convert_keys: bool = True,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: TransportT | None = None,
    ) -> None:
        self._headers = headers_for(api_key, headers)
        self._base_url = normalize_base_url(base_url)
        self._timeout = timeout
        self._convert = convert_keys
        self._retry = retry or RetryPolicy(max_retries=0)
        self._transport: TransportT | None = transport
        self._http: HttpT = self._new_http()
        _fork.register(self)

    def _new_http(self) -> HttpT:
        raise NotImplementedError

    def _after_fork_in_child(self) -> None:
        # The parent's pool shares sockets with the parent: leave it, never close it here.
        self._http = self._new_http()

    @property
    def base_url(self) -> str:
        """The ``…/api/client`` URL requests are sent under."""
        return self._base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _idempotency(self, key: str | None) -> dict[str, str]:
        # Retrying a trigger without a key could send a message twice: mint one per call.
        if key is None and self._retry.max_retries != 0:
            key = uuid.uuid4().hex
        return {"Idempotency-Key": key} if key else {}

    def _build(self, call: Call) -> tuple[str, str, dict[str, str], bytes]:
        headers = {**self._headers, **call.headers}
        return call.method, self._base_url + call.path, headers, call.content


class AsyncClosing:
    """``async with client:`` closes the client with ``aclose()`` on the way out."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
