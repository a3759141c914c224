"""``AsyncBatchingClient``: ``BatchingClient`` for asyncio code.

The queue and the sender thread are the very same as ``BatchingClient``'s, so delivery never
depends on the event loop being responsive (or even running at exit). ``track`` only appends
to the queue (or the spool) and returns; the calls that wait for an answer run in a worker
thread (``asyncio.to_thread``), so they never block the loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from ._batching import BatchingClient
from ._http import DEFAULT_TIMEOUT
from ._models import UpsertResult
from ._queue import Dropped
from ._retry import RetryPolicy

__all__ = ["AsyncBatchingClient"]


class AsyncBatchingClient:
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

    async def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        user: Mapping[str, Any] | None = None,
        created_at: dt.datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue an event and return its ``message_id`` at once (see ``Client.track``)."""
        return self._sync.track(
            event,
            properties,
            external_id=external_id,
            anonymous_id=anonymous_id,
            user=user,
            created_at=created_at,
            message_id=message_id,
        )

    # ``timeout`` is a delivery budget handed to the sender, not a cancellation scope.
    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Send everything queued so far; see ``BatchingClient.flush``."""
        return await asyncio.to_thread(self._sync.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Deliver what can be delivered within ``timeout``; see ``BatchingClient.close``."""
        await asyncio.to_thread(self._sync.close, timeout)

    async def __aenter__(self) -> AsyncBatchingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def identify(
        self,
        *,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        traits: Mapping[str, Any] | None = None,
    ) -> None:
        """Create or update a profile at once (see ``Client.identify``)."""
        await asyncio.to_thread(
            lambda: self._sync.identify(
                external_id=external_id,
                anonymous_id=anonymous_id,
                email=email,
                phone=phone,
                timezone=timezone,
                locale=locale,
                traits=traits,
            )
        )

    async def alias(self, *, anonymous_id: str, external_id: str) -> None:
        """Merge the anonymous profile into the known user (see ``Client.alias``)."""
        await asyncio.to_thread(
            lambda: self._sync.alias(anonymous_id=anonymous_id, external_id=external_id)
        )

    async def register_device(
        self,
        *,
        device_id: str,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        token: str | None = None,
        os: str | None = None,
        os_version: str | None = None,
        model: str | None = None,
        app_build: str | None = None,
        app_version: str | None = None,
        sdk_version: str | None = None,
    ) -> None:
        """Register a device (see ``Client.register_device``)."""
        await asyncio.to_thread(
            lambda: self._sync.register_device(
                device_id=device_id,
                external_id=external_id,
                anonymous_id=anonymous_id,
                token=token,
                os=os,
                os_version=os_version,
                model=model,
                app_build=app_build,
                app_version=app_version,
                sdk_version=sdk_version,
            )
        )

    async def upsert_users(
        self, users: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> UpsertResult:
        """Create or update 1-100 profiles (see ``Client.upsert_users``)."""
        return await asyncio.to_thread(
            lambda: self._sync.upsert_users(users, idempotency_key=idempotency_key)
        )

    async def trigger_campaign(
        self,
        campaign_id: str | int,
        *,
        external_id: str,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Send a trigger campaign to one user (see ``Client.trigger_campaign``)."""
        await asyncio.to_thread(
            lambda: self._sync.trigger_campaign(
                campaign_id,
                external_id=external_id,
                email=email,
                phone=phone,
                timezone=timezone,
                locale=locale,
                traits=traits,
                event=event,
                idempotency_key=idempotency_key,
            )
        )

    async def trigger_journey(
        self,
        journey_id: str | int,
        *,
        external_id: str,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Enter one user into a journey (see ``Client.trigger_journey``)."""
        await asyncio.to_thread(
            lambda: self._sync.trigger_journey(
                journey_id,
                external_id=external_id,
                email=email,
                phone=phone,
                timezone=timezone,
                locale=locale,
                traits=traits,
                event=event,
                idempotency_key=idempotency_key,
            )
        )
