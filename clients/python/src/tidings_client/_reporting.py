"""Reporting reads: the query strings of ``events``/``aggregations`` and their typed rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from ._exceptions import TidingsError

__all__ = ["AggregationRow", "Event", "EventPage", "EventUser", "Group", "events_query"]

Group = Literal["event_name", "campaign", "user", "day"]
_GROUPS = ("event_name", "campaign", "user", "day")


def _time(value: dt.datetime | str, name: str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC is the usual choice)")
    return value.isoformat()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def events_query(
    start: dt.datetime | str,
    end: dt.datetime | str,
    event_names: Iterable[str],
    external_ids: Iterable[str],
    anonymous_ids: Iterable[str],
    campaign_ids: Iterable[int],
    extra: Sequence[tuple[str, str]],
    /,
) -> str:
    """``from=…&to=…&event_name[]=…`` for the reporting routes; the filters in the order of
    the reporting calls' parameters."""
    pairs: list[tuple[str, str]] = [("from", _time(start, "start")), ("to", _time(end, "end"))]
    pairs += [("event_name[]", n) for n in event_names]
    pairs += [("external_id[]", x) for x in external_ids]
    pairs += [("anonymous_id[]", a) for a in anonymous_ids]
    pairs += [("campaign_id[]", str(int(c))) for c in campaign_ids]
    pairs += list(extra)
    return urlencode(pairs)


def check_groups(group_by: Iterable[str]) -> list[tuple[str, str]]:
    groups = list(group_by)
    for group in groups:
        if group not in _GROUPS:
            raise ValueError(f"group_by: {group!r} is not one of {', '.join(_GROUPS)}")
    return [("group_by[]", g) for g in groups]


def _body(response_json: Any) -> Mapping[str, Any]:
    if not isinstance(response_json, Mapping):
        raise TidingsError("the server answered a reporting read with something not an object")
    return response_json


@dataclass(frozen=True, slots=True)
class EventUser:
    """Who an event is about: the profile's external id (if known) and the event's
    anonymous id."""

    external_id: str | None = None
    anonymous_id: str | None = None

    @classmethod
    def from_json(cls, raw: Any) -> EventUser:
        raw = raw if isinstance(raw, Mapping) else {}
        return cls(external_id=raw.get("external_id"), anonymous_id=raw.get("anonymous_id"))


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event; ``data`` is None unless asked for with ``include_payload``."""

    id: str
    name: str
    created_at: dt.datetime | None
    user: EventUser
    campaign_id: int | None = None
    data: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        data = raw.get("data")
        return cls(
            id=str(raw.get("id")),
            name=str(raw.get("name")),
            created_at=_parse_time(raw.get("created_at")),
            user=EventUser.from_json(raw.get("user")),
            campaign_id=raw.get("campaign_id"),
            data=data if isinstance(data, Mapping) else None,
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of ``GET /events``; pass ``next_cursor`` back for the next one."""

    results: list[Event] = field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None
    limit: int = 0

    @classmethod
    def from_json(cls, body: Any) -> EventPage:
        fields = _body(body)
        return cls(
            results=[
                Event.from_json(r) for r in fields.get("results") or [] if isinstance(r, Mapping)
            ],
            next_cursor=fields.get("nextCursor"),
            prev_cursor=fields.get("prevCursor"),
            limit=int(fields.get("limit") or 0),
        )


@dataclass(frozen=True, slots=True)
class AggregationRow:
    """One group of ``GET /events/aggregations``; the group's keys are None when not
    grouped by them (``campaign_id`` is also None for events of no campaign)."""

    count: int
    unique_user_count: int
    first_seen_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    event_name: str | None = None
    campaign_id: int | None = None
    user: EventUser | None = None
    day: dt.date | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AggregationRow:
        day = raw.get("day")
        return cls(
            count=int(raw.get("count") or 0),
            unique_user_count=int(raw.get("unique_user_count") or 0),
            first_seen_at=_parse_time(raw.get("first_seen_at")),
            last_seen_at=_parse_time(raw.get("last_seen_at")),
            event_name=raw.get("event_name"),
            campaign_id=raw.get("campaign_id"),
            user=EventUser.from_json(raw["user"]) if "user" in raw else None,
            day=dt.date.fromisoformat(day) if isinstance(day, str) else None,
        )

    @classmethod
    def list_from_json(cls, body: Any) -> list[AggregationRow]:
        rows = _body(body).get("results") or []
        return [cls.from_json(r) for r in rows if isinstance(r, Mapping)]
