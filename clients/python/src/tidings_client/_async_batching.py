"""``AsyncBatchingClient``: ``BatchingClient`` for asyncio code.

The queue and the sender thread are the very same as ``BatchingClient``'s, so delivery never
depends on the event loop being responsive (or even running at exit). ``track`` only appends
to the queue (or the spool) and returns; the calls that wait for an answer run in a worker
thread (``asyncio.to_thread``), so they never block the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from ._base import AsyncClosing
from ._batching import BatchingClient
from ._http import DEFAULT_TIMEOUT
from ._ops import as_method, named_methods
from ._queue import Dropped
from ._reporting import Event
from ._retry import RetryPolicy

__all__ = ["AsyncBatchingClient"]

P = ParamSpec("P")
T = TypeVar("T")
Method = Callable[Concatenate[BatchingClient, P], T]
AsyncMethod = Callable[Concatenate["AsyncBatchingClient", P], Coroutine[Any, Any, T]]


def _at_once(method: Method[P, T]) -> AsyncMethod[P, T]:
    """A coroutine method calling ``method`` of the batching client, which never blocks."""

    async def call(self: AsyncBatchingClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self._sync, *args, **kwargs)

    return as_method(call, method)


def _in_thread(method: Method[P, T]) -> AsyncMethod[P, T]:
    """A coroutine method running ``method`` of the batching client in a worker thread."""

    async def call(self: AsyncBatchingClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self._sync, *args, **kwargs)

    return as_method(call, method)


def _pages_in_thread(
    method: Callable[Concatenate[BatchingClient, P], Iterator[Event]],
) -> Callable[Concatenate[AsyncBatchingClient, P], AsyncIterator[Event]]:
    """An async generator over ``method``'s rows, fetched in a worker thread a page's
    worth (100 rows) at a time."""

    async def call(
        self: AsyncBatchingClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[Event]:
        rows = method(self._sync, *args, **kwargs)  # a generator: nothing sent yet
        while chunk := await asyncio.to_thread(list, itertools.islice(rows, 100)):
            for row in chunk:
                yield row

    return as_method(call, method, "AsyncIterator[Event]")


@named_methods
class AsyncBatchingClient(AsyncClosing):
    """The asyncio face of ``BatchingClient``: same options, same guarantees, awaited calls.

    ``await client.track(...)`` queues and returns the ``message_id`` at once;
    ``await client.flush(timeout)`` and ``await client.aclose()`` wait in a worker thread.
    ``transport`` is a *sync* ``httpx.BaseTransport`` (the sender is a thread), e.g.
    ``tidings_client.testing.RecordingTransport``.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        convert_keys: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        retry: RetryPolicy | None = None,
        on_drop: Callable[[Dropped], object] | None = None,
        shutdown_timeout: float = 5.0,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_events: int = 1_000_000,
    ) -> None:
        self._sync = BatchingClient(
            api_key,
            base_url=base_url,
            timeout=timeout,
            convert_keys=convert_keys,
            headers=headers,
            transport=transport,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            retry=retry,
            on_drop=on_drop,
            shutdown_timeout=shutdown_timeout,
            spool_path=spool_path,
            spool_max_events=spool_max_events,
        )

    @property
    def batching_client(self) -> BatchingClient:
        """The underlying thread-based client (e.g. to ``track`` from sync code)."""
        return self._sync

    @property
    def base_url(self) -> str:
        """The ``…/api/client`` URL requests are sent under."""
        return self._sync.base_url

    @property
    def dropped(self) -> int:
        """Events given up since the client started (in this process)."""
        return self._sync.dropped

    @property
    def delivered(self) -> int:
        """Events the server acknowledged since the client started (in this process)."""
        return self._sync.delivered

    @property
    def queued(self) -> int:
        """Events waiting to be sent."""
        return self._sync.queued

    def __repr__(self) -> str:
        return f"AsyncBatchingClient(base_url={self.base_url!r})"

    track = _at_once(BatchingClient.track)

    # ``timeout`` is a delivery budget handed to the sender, not a cancellation scope.
    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Send everything queued so far; see ``BatchingClient.flush``."""
        return await asyncio.to_thread(self._sync.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Deliver what can be delivered within ``timeout``; see ``BatchingClient.close``."""
        await asyncio.to_thread(self._sync.close, timeout)

    identify = _in_thread(BatchingClient.identify)
    alias = _in_thread(BatchingClient.alias)
    register_device = _in_thread(BatchingClient.register_device)
    upsert_users = _in_thread(BatchingClient.upsert_users)
    trigger_campaign = _in_thread(BatchingClient.trigger_campaign)
    trigger_journey = _in_thread(BatchingClient.trigger_journey)
    events_page = _in_thread(BatchingClient.events_page)
    events = _pages_in_thread(BatchingClient.events)
    aggregations = _in_thread(BatchingClient.aggregations)
