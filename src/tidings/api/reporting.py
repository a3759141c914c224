"""The reporting API (secret key): event reads and aggregations, exports, list history.

The queries are ``reporting.queries`` (plain functions); this module parses the
parameters, runs them off the event loop and shapes the answers (times in RFC 3339).
Exports stream: a page of rows is read, written out and dropped before the next one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.lists_wire import READ, Responses, problem
from tidings.api.presenters import iso
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.errors import NotFound
from tidings.reporting import queries
from tidings.reporting.filters import EventFilter, parse_time
from tidings.reporting.history import list_history as history_of
from tidings.reporting.users import iter_users
from tidings.store.lists import ListStore

__all__ = ["MAX_AGGREGATION_DAYS", "reporting_router"]

_encode = msgspec.json.Encoder().encode
MAX_AGGREGATION_DAYS = 400
MAX_ID = 2_147_483_647  # resource ids are 32-bit integers
_ROWS_PER_CHUNK = 200

Strings = list[str] | None


class EventUser(BaseModel):
    external_id: str | None
    anonymous_id: str | None


class EventRow(BaseModel):
    id: str
    name: str
    created_at: str
    user: EventUser
    campaign_id: int | None
    data: dict[str, Any] | None = Field(default=None, description="With include_payload=true.")


class EventsPage(BaseModel):
    results: list[EventRow]
    nextCursor: str | None
    prevCursor: str | None
    limit: int


class Group(BaseModel):
    event_name: str | None = Field(default=None, description="When grouped by event_name.")
    campaign_id: int | None = Field(default=None, description="When grouped by campaign.")
    user: EventUser | None = Field(default=None, description="When grouped by user.")
    day: str | None = Field(default=None, description="YYYY-MM-DD (UTC), when grouped by day.")
    count: int
    unique_user_count: int
    first_seen_at: str | None
    last_seen_at: str | None


class Aggregations(BaseModel):
    results: list[Group]
    truncated: bool = Field(description="More groups than limit: only the first are here.")
    source: Literal["rollups", "sketches", "user_days", "events"] = Field(
        description="Where it was computed from; with sketches, unique_user_count is an "
        "estimate (about 1.6% standard error, docs/reporting.md)."
    )


class Day(BaseModel):
    day: str
    size: int
    entered: int
    left: int


class History(BaseModel):
    results: list[Day]


_BAD_RANGE = problem("from is after to, or the range is longer than allowed")
_EVENTS: Responses = {**READ, 422: _BAD_RANGE}
_STREAM: Responses = {
    **_EVENTS,
    200: {
        "description": "The rows, streamed: NDJSON (format=ndjson) or CSV (format=csv)",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    },
}


def _json(body: Any) -> Response:
    return Response(_encode(body), media_type="application/json")


def _present_event(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": iso(row["created_at"])}


def _present_group(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "first_seen_at": iso(row["first_seen_at"]),
        "last_seen_at": iso(row["last_seen_at"]),
    }


def _both(*groups: Strings) -> list[str]:
    return [value for group in groups for value in (group or [])]


EVENT_COLUMNS = ["id", "name", "created_at", "external_id", "anonymous_id", "campaign_id", "data"]
USER_COLUMNS = [
    "id",
    "external_id",
    "anonymous_ids",
    "email",
    "phone",
    "timezone",
    "locale",
    "created_at",
    "updated_at",
    "data",
]


def _event_record(row: dict[str, Any]) -> dict[str, Any]:
    user = row["user"]
    record = {
        "id": row["id"],
        "name": row["name"],
        "created_at": iso(row["created_at"]),
        "external_id": user["external_id"],
        "anonymous_id": user["anonymous_id"],
        "campaign_id": row["campaign_id"],
    }
    if "data" in row:
        record["data"] = row["data"]
    return record


def _user_record(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """One CSV cell: empty for null, JSON text for objects and lists, and text that a
    spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return)
    behind an apostrophe, as OWASP's CSV injection guidance says."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return _encode(value).decode()
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _stream(
    rows: Iterator[dict[str, Any]], columns: list[str], fmt: Literal["ndjson", "csv"]
) -> Iterator[bytes]:
    """NDJSON (one object a line) or CSV (a header, then one line a row: see ``_cell``),
    a few hundred rows per chunk."""
    buffer = io.StringIO()
    # CRLF, as RFC 4180 says: a field holding either character is then quoted.
    writer = csv.writer(buffer, lineterminator="\r\n")
    if fmt == "csv":
        writer.writerow(columns)
    pending = 0
    for row in rows:
        if fmt == "ndjson":
            buffer.write(_encode(row).decode())
            buffer.write("\n")
        else:
            writer.writerow([_cell(row.get(c)) for c in columns])
        pending += 1
        if pending >= _ROWS_PER_CHUNK:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if buffer.tell() or fmt == "csv":
        yield buffer.getvalue().encode()


def _media(fmt: str, name: str) -> tuple[str, dict[str, str]]:
    media = "application/x-ndjson" if fmt == "ndjson" else "text/csv; charset=utf-8"
    extension = "ndjson" if fmt == "ndjson" else "csv"
    return media, {"Content-Disposition": f'attachment; filename="{name}.{extension}"'}


From = Annotated[
    str | None,
    Query(alias="from", max_length=64, description="RFC 3339; created_at at or after."),
]
To = Annotated[
    str | None, Query(alias="to", max_length=64, description="RFC 3339; created_at before.")
]
Names = Annotated[Strings, Query(alias="event_name[]", description="Any of these names.")]
Name = Annotated[Strings, Query(alias="event_name", description="Same as event_name[].")]
Externals = Annotated[Strings, Query(alias="external_id[]", description="Users' ids.")]
External = Annotated[Strings, Query(alias="external_id", description="Same.")]
Anonymous = Annotated[Strings, Query(alias="anonymous_id[]", description="Users' ids.")]
Anonymous1 = Annotated[Strings, Query(alias="anonymous_id", description="Same.")]
Campaigns = Annotated[Strings, Query(alias="campaign_id[]", description="data.campaign_id.")]
Campaign = Annotated[Strings, Query(alias="campaign_id", description="Same.")]


@dataclass(frozen=True, slots=True)
class _Params:
    """The filter's query parameters, each list from both of its spellings."""

    since: str | None
    until: str | None
    names: list[str]
    external_ids: list[str]
    anonymous_ids: list[str]
    campaign_ids: list[str]


def _params(
    since: From = None,
    until: To = None,
    names: Names = None,
    name: Name = None,
    externals: Externals = None,
    external: External = None,
    anonymous: Anonymous = None,
    anonymous1: Anonymous1 = None,
    campaigns: Campaigns = None,
    campaign: Campaign = None,
) -> _Params:
    return _Params(
        since,
        until,
        _both(names, name),
        _both(externals, external),
        _both(anonymous, anonymous1),
        _both(campaigns, campaign),
    )


FilterParams = Annotated[_Params, Depends(_params)]


def reporting_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(prefix="/api/client", tags=["reporting"])
    reader = services.db.reader
    lists = ListStore(services.db.writer, services.db.reader)

    async def _filter(request: Request, p: _Params, max_days: int | None = None) -> EventFilter:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        return EventFilter.build(
            auth.project.id,
            p.since,
            p.until,
            names=p.names,
            external_ids=p.external_ids,
            anonymous_ids=p.anonymous_ids,
            campaign_ids=p.campaign_ids,
            max_days=max_days,
        )

    @router.get(
        "/events",
        summary="Events of the project in a time range",
        response_model=EventsPage,
        responses=_EVENTS,
    )
    async def get_events(
        request: Request,
        params: FilterParams,
        include_payload: bool = False,
        direction: Literal["asc", "desc"] = "desc",
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
    ) -> Response:
        f = await _filter(request, params)

        def read() -> queries.EventPage:
            with reader.connect() as conn:
                return queries.list_events(
                    conn,
                    f,
                    limit=limit,
                    cursor=cursor,
                    direction=direction,
                    include_payload=include_payload,
                )

        page = await run_in_threadpool(read)
        return _json(
            {
                "results": [_present_event(e) for e in page.results],
                "nextCursor": page.next_cursor,
                "prevCursor": page.prev_cursor,
                "limit": page.limit,
            }
        )

    @router.get(
        "/events/aggregations",
        summary="Counts and unique users, grouped",
        response_model=Aggregations,
        responses=_EVENTS,
    )
    async def get_aggregations(
        request: Request,
        params: FilterParams,
        group_by_list: Annotated[
            Strings,
            Query(alias="group_by[]", description="Any of event_name, campaign, user, day."),
        ] = None,
        group_by: Annotated[Strings, Query(description="Same as group_by[].")] = None,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_GROUPS)] = 1000,
    ) -> Response:
        f = await _filter(request, params, MAX_AGGREGATION_DAYS)
        groups = _both(group_by_list, group_by)

        def read() -> queries.Aggregation:
            with reader.connect() as conn:
                return queries.aggregate(conn, f, groups, limit=limit)

        result = await run_in_threadpool(read)
        return _json(
            {
                "results": [_present_group(r) for r in result.results],
                "truncated": result.truncated,
                "source": result.source,
            }
        )

    @router.get(
        "/events/export",
        summary="Every event of a filter, streamed (NDJSON or CSV)",
        response_class=StreamingResponse,
        responses=_STREAM,
    )
    async def export_events(
        request: Request,
        params: FilterParams,
        include_payload: bool = True,
        format: Literal["ndjson", "csv"] = "ndjson",
    ) -> Response:
        f = await _filter(request, params)
        rows = (
            _event_record(r)
            for r in queries.iter_events(reader, f, include_payload=include_payload)
        )
        columns = EVENT_COLUMNS if include_payload else EVENT_COLUMNS[:-1]
        media, headers = _media(format, "events")
        return StreamingResponse(_stream(rows, columns, format), media_type=media, headers=headers)

    @router.get(
        "/users/export",
        summary="Every user (or a list's members), streamed",
        response_class=StreamingResponse,
        responses={**_STREAM, 404: problem("No list with this id in the key's project")},
    )
    async def export_users(
        request: Request,
        list_id: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="Only this list's members.")
        ] = None,
        format: Literal["ndjson", "csv"] = "ndjson",
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        project_id = auth.project.id
        if list_id is not None:
            found = await run_in_threadpool(lists.get, project_id, list_id)
            if found is None:
                raise NotFound(f"No list with id {list_id}.", param="list_id")
        rows = (_user_record(r) for r in iter_users(reader, project_id, list_id=list_id))
        media, headers = _media(format, "users")
        return StreamingResponse(
            _stream(rows, USER_COLUMNS, format), media_type=media, headers=headers
        )

    @router.get(
        "/lists/{id}/history",
        summary="A list's size at the end of each day",
        response_model=History,
        responses={**_EVENTS, 404: problem("No list with this id in the key's project")},
    )
    async def list_history(
        request: Request,
        id: str,
        since: From = None,
        until: To = None,
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        project_id = auth.project.id
        if not id.isascii() or not id.isdigit() or len(id) > 10 or int(id) > MAX_ID:
            raise NotFound(f"No list with id '{id[:40]}'.", param="id")
        list_id = int(id)
        start, end = parse_time(since, "from"), parse_time(until, "to")
        EventFilter.build(project_id, start, end, max_days=MAX_AGGREGATION_DAYS)
        found = await run_in_threadpool(lists.get, project_id, list_id)
        if found is None:
            raise NotFound(f"No list with id {list_id}.", param="id")

        def read() -> list[dict[str, Any]]:
            with reader.connect() as conn:
                return history_of(conn, project_id, list_id, start, end)

        return _json({"results": await run_in_threadpool(read)})

    return router
