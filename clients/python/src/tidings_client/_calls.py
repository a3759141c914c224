"""Every call of the client API, written once: its parameters, docs, checks, request and answer.

Each function takes the client (for its options) and the call's arguments, checks them and
returns the ``Op`` to perform, without any I/O. ``Client`` turns them into blocking methods,
``AsyncClient`` into awaited ones and ``AsyncBatchingClient`` into ones run in a worker
thread, so every client has the same signatures and sends the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from . import _payloads as p
from ._base import ClientBase
from ._models import UpsertResult
from ._ops import Call, Op, Pages, Request, Track, read_json
from ._reporting import AggregationRow, EventPage, check_groups, events_query

__all__ = [
    "aggregations",
    "alias",
    "events",
    "events_page",
    "identify",
    "register_device",
    "track",
    "trigger_campaign",
    "trigger_journey",
    "upsert_users",
]

Client = ClientBase[Any, Any]


def _nothing(response: httpx.Response) -> None:
    return None


def _post(path: str, body: Any) -> Op[None]:
    return Request(Call("POST", path, p.dumps(body)), _nothing)


def _segment(value: str | int) -> str:
    text = str(value)
    if not text:
        raise ValueError("an id in the URL path must not be empty")
    return quote(text, safe="")


def track(
    client: Client,
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    external_id: str | None = None,
    anonymous_id: str | None = None,
    user: Mapping[str, Any] | None = None,
    created_at: dt.datetime | str | None = None,
    message_id: str | None = None,
) -> Track:
    """Record that a user did ``event``; returns the event's ``message_id``.

    ``properties`` become the event's ``data``; ``user`` (``email``, ``phone``,
    ``timezone``, ``locale``, ``data``) updates the profile on the way. ``created_at`` is a
    timezone-aware datetime or an ISO-8601 string (default: when the server receives it).
    A ``message_id`` is generated when none is given; the server stores an event once per
    ``message_id``, so sending it again is harmless.
    """
    if not isinstance(event, str) or not event:
        raise ValueError("track() needs a non-empty event name")
    ext, anon = p.user_ids("track", external_id, anonymous_id)
    body = p.compact(
        {
            "name": event,
            "external_id": ext,
            "anonymous_id": anon,
            "data": p.mapping("properties", properties, client._convert),
            "user": p.mapping("user", user, client._convert),
            "created_at": p.timestamp(created_at),
            "message_id": p.id_value("message_id", message_id) or p.new_message_id(),
        }
    )
    return Track(str(body["message_id"]), p.dumps(body))


def identify(
    client: Client,
    *,
    external_id: str | None = None,
    anonymous_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    timezone: str | None = None,
    locale: str | None = None,
    traits: Mapping[str, Any] | None = None,
) -> Op[None]:
    """Create or update a profile; traits are shallow-merged (a ``None`` value clears one).

    Giving both ids links the anonymous history to the known user.
    """
    ext, anon = p.user_ids("identify", external_id, anonymous_id)
    body = {
        "external_id": ext,
        "anonymous_id": anon,
        "email": email,
        "phone": phone,
        "timezone": timezone,
        "locale": locale,
        "data": p.mapping("traits", traits, client._convert),
    }
    return _post("/identify", p.compact(body))


def alias(client: Client, *, anonymous_id: str, external_id: str) -> Op[None]:
    """Merge the anonymous profile (and its events) into the known user."""
    ext, anon = p.id_value("external_id", external_id), p.id_value("anonymous_id", anonymous_id)
    if ext is None or anon is None:
        raise ValueError("alias() needs both an anonymous_id and an external_id")
    return _post("/alias", {"anonymous_id": anon, "external_id": ext})


def register_device(
    client: Client,
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
) -> Op[None]:
    """Register (or update) a device and its push token for a user."""
    ext, anon = p.user_ids("register_device", external_id, anonymous_id)
    if not device_id:
        raise ValueError("register_device() needs a device_id")
    body = {
        "external_id": ext,
        "anonymous_id": anon,
        "device_id": device_id,
        "token": token,
        "os": os,
        "os_version": os_version,
        "model": model,
        "app_build": app_build,
        "app_version": app_version,
        "sdk_version": sdk_version,
    }
    return _post("/devices", p.compact(body))


def upsert_users(
    client: Client, users: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
) -> Op[UpsertResult]:
    """Create or update 1-100 profiles at once (secret key); one result per item.

    Each item is ``{external_id?, anonymous_id?, email?, phone?, timezone?, locale?,
    data?}`` with at least one id. Items fail independently: check ``result.failed``.
    """
    body = p.dumps(p.users_body(users, convert=client._convert))
    call = Call("POST", "/users/batch", body, client._idempotency(idempotency_key))
    return Request(
        call, lambda response: UpsertResult.from_json(read_json(response, "upsert_users"))
    )


def trigger_campaign(
    client: Client,
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
) -> Op[None]:
    """Send a trigger campaign to one user (secret key); ``event`` feeds the template.

    A draft or stopped campaign raises ``ConflictError``. Pass an ``idempotency_key``
    to make a retried trigger send at most once.
    """
    body = p.trigger_body(
        external_id, email, phone, timezone, locale, traits, event, client._convert
    )
    return _trigger(client, f"/campaigns/{_segment(campaign_id)}", body, idempotency_key)


def trigger_journey(
    client: Client,
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
) -> Op[None]:
    """Enter one user into a journey (secret key); ``event`` is the entrance event data.

    A draft or stopped journey raises ``ConflictError``.
    """
    body = p.trigger_body(
        external_id, email, phone, timezone, locale, traits, event, client._convert
    )
    return _trigger(client, f"/journeys/{_segment(journey_id)}", body, idempotency_key)


def _trigger(client: Client, target: str, body: Any, idempotency_key: str | None) -> Op[None]:
    headers = client._idempotency(idempotency_key)
    return Request(Call("POST", f"{target}/trigger", p.dumps(body), headers), _nothing)


# -- reporting reads ------------------------------------------------------------------------


def events_page(
    client: Client,
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
) -> Op[EventPage]:
    """One page of the project's events in ``created_at`` order (``direction``).

    ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
    RFC 3339 strings; the lists filter by any of their values (users by external or
    anonymous id together). Secret key.
    """
    if direction not in ("asc", "desc"):
        raise ValueError("direction must be 'asc' or 'desc'")
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    extra = [
        ("include_payload", "true" if include_payload else "false"),
        ("direction", direction),
        ("limit", str(limit)),
    ]
    if cursor:
        extra.append(("cursor", cursor))
    query = events_query(start, end, event_names, external_ids, anonymous_ids, campaign_ids, extra)
    return Request(
        Call("GET", f"/events?{query}", b""), lambda r: EventPage.from_json(read_json(r))
    )


def events(
    client: Client,
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
) -> Pages:
    """Every event of the filter, fetched page by page as you iterate (the cursor never skips or
    repeats an event, even while new ones arrive).

    ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
    RFC 3339 strings; the lists filter by any of their values (users by external or
    anonymous id together). Secret key.
    """

    def page(cursor: str | None) -> Op[EventPage]:
        return events_page(
            client,
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

    return Pages(page)


def aggregations(
    client: Client,
    start: dt.datetime | str,
    end: dt.datetime | str,
    *,
    group_by: Sequence[str] = (),
    event_names: Sequence[str] = (),
    external_ids: Sequence[str] = (),
    anonymous_ids: Sequence[str] = (),
    campaign_ids: Sequence[int] = (),
    limit: int = 1000,
) -> Op[list[AggregationRow]]:
    """Counts, unique users and first/last seen, grouped by any of ``event_name``, ``campaign``,
    ``user`` and ``day`` (UTC); no ``group_by``: one total row.

    ``start`` (inclusive) and ``end`` (exclusive) are timezone-aware datetimes or
    RFC 3339 strings; the lists filter by any of their values (users by external or
    anonymous id together). Secret key.
    """
    extra = [*check_groups(group_by), ("limit", str(limit))]
    query = events_query(start, end, event_names, external_ids, anonymous_ids, campaign_ids, extra)
    call = Call("GET", f"/events/aggregations?{query}", b"")
    return Request(call, lambda r: AggregationRow.list_from_json(read_json(r)))
