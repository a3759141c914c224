"""``AsyncClient``: the asyncio twin of ``Client``, one awaited request per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from . import _calls as calls
from ._base import AsyncClosing, ClientBase
from ._ops import Attempts, Op, Pages, as_method, named_methods, result_of
from ._reporting import Event, EventPage

__all__ = ["AsyncClient"]

P = ParamSpec("P")
T = TypeVar("T")
Spec = Callable[Concatenate[ClientBase[Any, Any], P], T]


def _awaited(spec: Spec[P, Op[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """The coroutine method performing the op ``spec`` returns (checks run when awaited)."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._perform(spec(self, *args, **kwargs))

    return as_method(method, spec, result_of(spec))


def _awaited_pages(
    spec: Spec[P, Pages],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[Event]]:
    """The async generator method fetching page after page as it is iterated."""

    async def method(
        self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[Event]:
        pages = spec(self, *args, **kwargs)
        op: Op[EventPage] | None = pages.first()
        while op is not None:
            page = await self._perform(op)
            for event in page.results:
                yield event
            op = pages.after(page)

    return as_method(method, spec, "AsyncIterator[Event]")


@named_methods
class AsyncClient(ClientBase[httpx.AsyncBaseTransport, httpx.AsyncClient], AsyncClosing):
    """An asyncio client for the Tidings client API (``/api/client``).

    Same arguments and calls as ``Client``, awaited. Each call sends one request; a failure raises a
    ``TidingsError`` subclass. Nothing is retried unless ``retry`` is given, e.g.
    ``AsyncClient(key, retry=RetryPolicy(max_retries=3))``; retries resend the same bytes, so an
    event is stored once. Usable as an async context manager; after ``os.fork()`` the
    child opens its own connections.

    Args:
        api_key, base_url, timeout, convert_keys, retry, headers: as for ``Client``.
        transport: an ``httpx.AsyncBaseTransport``, e.g.
            ``tidings_client.testing.RecordingTransport``.
    """

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, timeout=self._timeout)

    @staticmethod
    async def _sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        await self._http.aclose()

    async def _perform(self, op: Op[T]) -> T:
        method, url, headers, content = self._build(op.call)
        attempts = Attempts(self._retry)
        while True:
            answer: httpx.Response | httpx.RequestError
            try:
                answer = await self._http.request(method, url, headers=headers, content=content)
            except httpx.RequestError as exc:
                answer = exc
            outcome = attempts.outcome(answer)
            if isinstance(outcome, httpx.Response):
                return op.read(outcome)
            await self._sleep(outcome)

    track = _awaited(calls.track)
    identify = _awaited(calls.identify)
    alias = _awaited(calls.alias)
    register_device = _awaited(calls.register_device)
    upsert_users = _awaited(calls.upsert_users)
    trigger_campaign = _awaited(calls.trigger_campaign)
    trigger_journey = _awaited(calls.trigger_journey)
    events_page = _awaited(calls.events_page)
    events = _awaited_pages(calls.events)
    aggregations = _awaited(calls.aggregations)
