"""``AsyncClient``: the asyncio twin of ``Client``, one awaited request per call."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from . import _fork
from ._base import Call, ClientBase
from ._exceptions import TidingsError
from ._http import DEFAULT_TIMEOUT, connection_error, error_from_response
from ._models import UpsertResult
from ._reporting import AggregationRow, Event, EventPage
from ._retry import RetryPolicy, retry_after_of

__all__ = ["AsyncClient"]


class AsyncClient(ClientBase):
    """An asyncio client for the Tidings client API (``/api/client``).

    Same arguments and calls as ``Client``, awaited. Each call sends one request; a failure raises a
    ``TidingsError`` subclass. Nothing is retried unless ``retry`` is given, e.g.
    ``AsyncClient(key, retry=RetryPolicy(max_retries=3))``; retries resend the same bytes, so an
    event is stored once. Usable as an async context manager; after ``os.fork()`` the
    child opens its own connections.

    Args:
        api_key: a ``pk_…`` publishable key (track, identify, alias, devices) or a ``sk_…``
            secret key (everything).
        base_url: the server root, e.g. ``https://tidings.example.com``; defaults to the
            ``TIDINGS_BASE_URL`` environment variable, else ``http://localhost:8000``.
        timeout: seconds (or an ``httpx.Timeout``) to wait for each request.
        convert_keys: convert camelCase keys of properties, traits and users to snake_case
            the way Spotzee's JS SDK does (``lifetimeValue`` → ``lifetime_value``).
        retry: a ``RetryPolicy``; the default retries nothing.
        headers: extra headers for every request.
        transport: an ``httpx.AsyncBaseTransport``, e.g.
            ``tidings_client.testing.RecordingTransport``.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        convert_keys: bool = True,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            convert_keys=convert_keys,
            retry=retry,
            headers=headers,
        )
        self._transport = transport
        self._http = self._new_http()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        _fork.register(self)

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, timeout=self._timeout)

    def _after_fork_in_child(self) -> None:
        # The parent's pool shares sockets with the parent: leave it, never close it here.
        self._http = self._new_http()

    async def aclose(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        method, url, headers, content = self._build(call)
        retries = 0
        while True:
            error: TidingsError
            try:
                response = await self._http.request(method, url, headers=headers, content=content)
            except httpx.RequestError as exc:
                error = connection_error(exc)
            else:
                if response.is_success:
                    return response
                error = error_from_response(response)
            if not self._retry.should_retry(retries, error):
                raise error
            await self._sleep(self._retry.delay(retries, retry_after_of(error)))
            retries += 1

    # -- calls --------------------------------------------------------------------------

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
        """Record that a user did ``event``; returns the event's ``message_id``.

        ``properties`` become the event's ``data``; ``user`` (``email``, ``phone``,
        ``timezone``, ``locale``, ``data``) updates the profile on the way. ``created_at`` is a
        timezone-aware datetime or an ISO-8601 string (default: when the server receives it).
        A ``message_id`` is generated when none is given; the server stores an event once per
        ``message_id``, so sending it again is harmless.
        """
        call, mid = self._track_call(
            event,
            properties,
            external_id=external_id,
            anonymous_id=anonymous_id,
            user=user,
            created_at=created_at,
            message_id=message_id,
        )
        await self._send(call)
        return mid

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
        """Create or update a profile; traits are shallow-merged (a ``None`` value clears one).

        Giving both ids links the anonymous history to the known user.
        """
        await self._send(
            self._identify_call(
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
        """Merge the anonymous profile (and its events) into the known user."""
        await self._send(self._alias_call(anonymous_id=anonymous_id, external_id=external_id))

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
        """Register (or update) a device and its push token for a user."""
        await self._send(
            self._device_call(
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
        """Create or update 1-100 profiles at once (secret key); one result per item.

        Each item is ``{external_id?, anonymous_id?, email?, phone?, timezone?, locale?,
        data?}`` with at least one id. Items fail independently: check ``result.failed``.
        """
        return self._upsert_result(await self._send(self._users_call(users, idempotency_key)))

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
        """Send a trigger campaign to one user (secret key); ``event`` feeds the template.

        A draft or stopped campaign raises ``ConflictError``. Pass an ``idempotency_key``
        to make a retried trigger send at most once.
        """
        await self._send(
            self._trigger_call(
                "campaigns",
                campaign_id,
                idempotency_key,
                external_id=external_id,
                email=email,
                phone=phone,
                timezone=timezone,
                locale=locale,
                traits=traits,
                event=event,
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
        """Enter one user into a journey (secret key); ``event`` is the entrance event data.

        A draft or stopped journey raises ``ConflictError``.
        """
        await self._send(
            self._trigger_call(
                "journeys",
                journey_id,
                idempotency_key,
                external_id=external_id,
                email=email,
                phone=phone,
                timezone=timezone,
                locale=locale,
                traits=traits,
                event=event,
            )
        )

    # -- reporting reads ------------------------------------------------------------------

    async def events_page(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        event_names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[int] = (),
        include_payload: bool = False,
        direction: str = "desc",
        limit: int = 100,
        cursor: str | None = None,
    ) -> EventPage:
        """One page of the project's events in ``created_at`` order (``direction``).

        ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
        RFC 3339 strings; the lists filter by any of their values (users by external or
        anonymous id together). Secret key.
        """
        call = self._events_call(
            start,
            end,
            event_names=event_names,
            external_ids=external_ids,
            anonymous_ids=anonymous_ids,
            campaign_ids=campaign_ids,
            include_payload=include_payload,
            direction=direction,
            limit=limit,
            cursor=cursor,
        )
        return EventPage.from_json(self._json(await self._send(call)))

    async def events(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        event_names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[int] = (),
        include_payload: bool = False,
        direction: str = "desc",
        page_size: int = 100,
    ) -> AsyncIterator[Event]:
        """Every event of the filter, fetched page by page as you iterate (the cursor never skips or
        repeats an event, even while new ones arrive).

        ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
        RFC 3339 strings; the lists filter by any of their values (users by external or
        anonymous id together). Secret key.
        """
        cursor: str | None = None
        while True:
            page = await self.events_page(
                start,
                end,
                event_names=event_names,
                external_ids=external_ids,
                anonymous_ids=anonymous_ids,
                campaign_ids=campaign_ids,
                include_payload=include_payload,
                direction=direction,
                limit=page_size,
                cursor=cursor,
            )
            for event in page.results:
                yield event
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def aggregations(
        self,
        start: dt.datetime | str,
        end: dt.datetime | str,
        *,
        group_by: Sequence[str] = (),
        event_names: Sequence[str] = (),
        external_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        campaign_ids: Sequence[int] = (),
        limit: int = 1000,
    ) -> list[AggregationRow]:
        """Counts, unique users and first/last seen, grouped by any of ``event_name``, ``campaign``,
        ``user`` and ``day`` (UTC); no ``group_by``: one total row.

        ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
        RFC 3339 strings; the lists filter by any of their values (users by external or
        anonymous id together). Secret key.
        """
        call = self._aggregations_call(
            start,
            end,
            group_by=group_by,
            event_names=event_names,
            external_ids=external_ids,
            anonymous_ids=anonymous_ids,
            campaign_ids=campaign_ids,
            limit=limit,
        )
        return AggregationRow.list_from_json(self._json(await self._send(call)))
