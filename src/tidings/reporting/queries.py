"""Reporting reads: plain functions over a connection (or an engine, for the streaming
exports), callable from the API, the admin UI and benches alike.

- ``list_events``: one page of a project's events in ``created_at`` order, with keyset
  cursors on ``(created_at, id)``.
- ``aggregate``: counts, unique users and first/last seen, grouped by any of event name,
  campaign, user and UTC day; from the rollups when the filter allows, else from the
  events (``plan`` says which; docs/reporting.md has the table).
- ``iter_events``: every event of a filter, page by page (keyset), each page on a
  connection of its own: constant memory, no long-held read transaction.

``reporting.users.iter_users`` and ``reporting.history.list_history`` are their
neighbours for users and lists.

Times are microseconds since the epoch (UTC), as stored; the API turns them into
RFC 3339.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import InvalidRequest
from tidings.reporting.filters import GROUPS, EventFilter
from tidings.store import cursors, hll
from tidings.store.rollups import day_sql, sketches_of
from tidings.store.tables import events, identities, profiles
from tidings.store.tables_reporting import event_rollups, event_user_days

__all__ = [
    "EXACT_USER_DAYS",
    "Aggregation",
    "EventPage",
    "Plan",
    "aggregate",
    "campaign_of",
    "day_text",
    "iter_events",
    "list_events",
    "plan",
]

Direction = Literal["asc", "desc"]
Plan = Literal["rollups", "sketches", "user_days", "events"]
MAX_GROUPS = 10_000
# Unique users over several days are counted exactly (COUNT(DISTINCT) over the user-days)
# up to this many user-days in the range, and estimated from the day sketches beyond.
EXACT_USER_DAYS = 5_000
_CHUNK = 300


def day_text(day: int) -> str:
    return datetime.fromtimestamp(day // 1_000_000, UTC).strftime("%Y-%m-%d")


def campaign_of(data: Any) -> int | None:
    """An event's campaign: ``data.campaign_id`` when it is a JSON integer."""
    if isinstance(data, dict):
        value = data.get("campaign_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _campaign_sql(dialect: str) -> Any:
    """``campaign_of`` in SQL, for both databases."""
    if dialect == "postgresql":
        return sa.literal_column(
            "(CASE WHEN jsonb_typeof(events.data -> 'campaign_id') = 'number' "
            "AND (events.data ->> 'campaign_id') ~ '^-?[0-9]{1,18}$' "
            "THEN (events.data ->> 'campaign_id')::bigint END)",
            sa.BigInteger,
        )
    return sa.literal_column(
        "(CASE WHEN json_type(events.data, '$.campaign_id') = 'integer' "
        "THEN json_extract(events.data, '$.campaign_id') END)",
        sa.BigInteger,
    )


def _profiles_of(conn: Connection, f: EventFilter) -> list[str]:
    """The profiles the filter's external and anonymous ids name now."""
    found: set[str] = set()
    for kind, values in (("external", f.external_ids), ("anonymous", f.anonymous_ids)):
        if values:
            found.update(
                conn.execute(
                    sa.select(identities.c.profile_id).where(
                        identities.c.project_id == f.project_id,
                        identities.c.kind == kind,
                        identities.c.value.in_(values),
                    )
                ).scalars()
            )
    return sorted(found)


def _conditions(conn: Connection, f: EventFilter) -> list[Any] | None:
    """WHERE conditions on ``events`` for the filter; None when it selects nothing."""
    e = events.c
    where: list[Any] = [e.project_id == f.project_id, e.created_at >= f.start, e.created_at < f.end]
    if f.names:
        where.append(e.name.in_(f.names))
    if f.by_user:
        ids = _profiles_of(conn, f)
        if not ids:
            return None
        where.append(e.profile_id.in_(ids))
    if f.campaign_ids:
        where.append(_campaign_sql(conn.dialect.name).in_(f.campaign_ids))
    return where


# -- the event list -----------------------------------------------------------------------


@dataclass(slots=True)
class EventPage:
    results: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


_CursorShape = tuple[Literal[1], str, Literal["asc", "desc"], Literal["n", "p"], int, str]


def _encode_cursor(f: EventFilter, direction: Direction, kind: str, at: tuple[int, str]) -> str:
    return cursors.encode(1, f.fingerprint(), direction, kind, at[0], at[1])


def _decode_cursor(cursor: str, f: EventFilter, direction: Direction) -> tuple[str, int, str]:
    """The position in ``cursor`` (checked by ``store.cursors``), which must have been made
    for this filter (its digest) and direction: 400 ``parameter_invalid_format`` if not."""
    _, fingerprint, made_for, kind, created_at, event_id = cursors.decode(cursor, _CursorShape)
    if fingerprint != f.fingerprint() or made_for != direction:
        raise InvalidRequest(
            "cursor: made for other filters or another direction; start again without it.",
            param="cursor",
        )
    if not event_id.startswith("evt_") or len(event_id) > 32:
        raise cursors.invalid_cursor()
    return kind, created_at, event_id


def _beyond(at: tuple[int, str], ascending: bool) -> Any:
    """Rows strictly after ``at`` in the order; the plain bound keeps the index range."""
    created, eid = events.c.created_at, events.c.id
    if ascending:
        return sa.and_(created >= at[0], sa.or_(created > at[0], eid > at[1]))
    return sa.and_(created <= at[0], sa.or_(created < at[0], eid < at[1]))


def _event_select(conn: Connection, include_payload: bool) -> Any:
    e = events.c
    columns = [
        e.id,
        e.name,
        e.created_at,
        sa.func.coalesce(profiles.c.external_id, e.external_id).label("external_id"),
        e.anonymous_id,
        _campaign_sql(conn.dialect.name).label("campaign_id"),
    ]
    if include_payload:
        columns.append(e.data)
    return sa.select(*columns).select_from(
        events.outerjoin(profiles, profiles.c.id == e.profile_id)
    )


def _row(row: Any, include_payload: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "created_at": row.created_at,
        "user": {"external_id": row.external_id, "anonymous_id": row.anonymous_id},
        "campaign_id": row.campaign_id,
    }
    if include_payload:
        item["data"] = row.data if row.data is not None else {}
    return item


def list_events(
    conn: Connection,
    f: EventFilter,
    *,
    limit: int = 25,
    cursor: str | None = None,
    direction: Direction = "desc",
    include_payload: bool = False,
) -> EventPage:
    """One page of the filter's events ordered by ``(created_at, id)`` in ``direction``.

    ``nextCursor`` continues after the page's last row, ``prevCursor`` goes back before its
    first. Positions are keys, not offsets: events that arrive meanwhile (with any
    ``created_at``, ties included) never make a row repeat or an existing row be skipped.
    """
    ascending = direction == "asc"
    kind, at = "n", None
    if cursor:
        kind, created_at, event_id = _decode_cursor(cursor, f, direction)
        at = (created_at, event_id)
    where = _conditions(conn, f)
    if where is None:
        return EventPage([], None, None, limit)
    backwards = kind == "p"
    order_asc = ascending != backwards
    query = _event_select(conn, include_payload).where(*where)
    if at is not None:
        query = query.where(_beyond(at, order_asc))
    order = (events.c.created_at, events.c.id)
    query = query.order_by(*(c.asc() if order_asc else c.desc() for c in order)).limit(limit + 1)
    rows = list(conn.execute(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    first = (rows[0].created_at, rows[0].id) if rows else at
    last = (rows[-1].created_at, rows[-1].id) if rows else at

    def exists(position: tuple[int, str] | None, forward: bool) -> bool:
        if position is None:
            return False
        probe = (
            sa.select(events.c.id)
            .where(*where, _beyond(position, ascending if forward else not ascending))
            .limit(1)
        )
        return conn.execute(probe).first() is not None

    if backwards:
        has_prev, has_next = more, exists(last, True)
    else:
        has_next, has_prev = more, at is not None and exists(first, False)
    return EventPage(
        results=[_row(r, include_payload) for r in rows],
        next_cursor=_encode_cursor(f, direction, "n", last) if has_next and last else None,
        prev_cursor=_encode_cursor(f, direction, "p", first) if has_prev and first else None,
        limit=limit,
    )


def iter_events(
    engine: Engine, f: EventFilter, *, include_payload: bool = True, page_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every event of the filter, oldest first, ``page_size`` rows per query."""
    at: tuple[int, str] | None = None
    while True:
        with engine.connect() as conn:
            where = _conditions(conn, f)
            if where is None:
                return
            query = _event_select(conn, include_payload).where(*where)
            if at is not None:
                query = query.where(_beyond(at, True))
            query = query.order_by(events.c.created_at, events.c.id).limit(page_size)
            rows = conn.execute(query).all()
        for row in rows:
            yield _row(row, include_payload)
        if len(rows) < page_size:
            return
        at = (rows[-1].created_at, rows[-1].id)


# -- aggregations -----------------------------------------------------------------------


@dataclass(slots=True)
class Aggregation:
    results: list[dict[str, Any]]
    source: Plan
    truncated: bool


def plan(f: EventFilter, group_by: Sequence[str]) -> Plan:
    """Where an aggregation is computed from:

    - ``rollups`` (``event_rollups``): grouped by exactly event name and day;
    - ``user_days``: no grouping, ``event_name`` or ``day``: counts and first/last seen
      from ``event_rollups``, unique users counted in ``event_user_days``; but
      ``aggregate`` answers no grouping or ``event_name`` alone from ``sketches`` (unique
      users estimated from ``event_day_sketches``) when the range holds more than
      ``EXACT_USER_DAYS`` user-days;
    - ``events``: a campaign or a user in the filter or the grouping (a user-day says who
      had an event, not how many times), or ``from``/``to`` not at a UTC midnight (the
      rollups are per whole day).
    """
    if (
        f.campaign_ids
        or f.by_user
        or "campaign" in group_by
        or "user" in group_by
        or not f.whole_days
    ):
        return "events"
    if set(group_by) == {"event_name", "day"}:
        return "rollups"
    return "user_days"


def _check_groups(group_by: Sequence[str]) -> list[str]:
    groups = list(dict.fromkeys(group_by))
    for group in groups:
        if group not in GROUPS:
            raise InvalidRequest(
                f"group_by: '{group[:40]}' is not one of {', '.join(GROUPS)}.", param="group_by"
            )
    return groups


def aggregate(
    conn: Connection,
    f: EventFilter,
    group_by: Sequence[str] = (),
    *,
    limit: int = 1000,
    source: Plan | None = None,
) -> Aggregation:
    """Rows ``{event_name?, campaign_id?, user?, day?, count, unique_user_count,
    first_seen_at, last_seen_at}`` grouped by ``group_by`` (none: one total row, even for
    no events). ``source`` forces a plan (benches compare them); the answer is the same,
    but for ``sketches``, whose unique users are estimates.
    At most ``limit`` groups (``truncated`` says there were more)."""
    groups = _check_groups(group_by)
    chosen = source or plan(f, groups)
    if chosen != "events" and plan(f, groups) == "events":
        raise ValueError(f"this filter cannot be answered from {chosen}")
    totals_fit = set(groups) <= {"event_name"} and plan(f, groups) != "events"
    if source == "sketches" and not totals_fit:
        raise ValueError("the sketches answer no grouping or event_name alone")
    if source is None and chosen == "user_days" and totals_fit:
        totals = _rollup_totals(conn, f, bool(groups), limit)
        if sum(t.users for t in totals) > EXACT_USER_DAYS:
            return _from_sketches(conn, f, groups, limit, totals)
    if chosen == "sketches":
        return _from_sketches(conn, f, groups, limit, _rollup_totals(conn, f, bool(groups), limit))
    if chosen == "rollups" and set(groups) != {"event_name", "day"}:
        raise ValueError("the rollups answer only event name and day groups")
    keys: dict[str, Any]
    if chosen == "events":
        where = _conditions(conn, f)
        e = events.c
        keys = {
            "event_name": e.name,
            "campaign": _campaign_sql(conn.dialect.name),
            "user": e.profile_id,
            "day": day_sql(e.created_at),
        }
        measures = [
            sa.func.count().label("count"),
            sa.func.count(sa.distinct(e.profile_id)).label("unique_user_count"),
            sa.func.min(e.created_at).label("first_seen_at"),
            sa.func.max(e.created_at).label("last_seen_at"),
        ]
        base = sa.select(*[keys[g].label(g) for g in groups], *measures)
        if where is None:
            where = [sa.false()]
        query = base.select_from(events).where(*where)
    elif chosen == "user_days":
        return _from_user_days(conn, f, groups, limit)
    else:
        r = event_rollups.c
        keys = {"event_name": r.name, "day": r.day}
        where = [r.project_id == f.project_id, r.day >= f.start, r.day < f.end]
        if f.names:
            where.append(r.name.in_(f.names))
        query = sa.select(
            *[keys[g].label(g) for g in groups],
            r.count.label("count"),
            r.users.label("unique_user_count"),
            r.first_seen_at,
            r.last_seen_at,
        ).where(*where)
    if groups and chosen != "rollups":
        query = query.group_by(*[keys[g] for g in groups])
    if groups:
        query = query.order_by(*[sa.nulls_first(keys[g].asc()) for g in groups])
        query = query.limit(limit + 1)
    rows = conn.execute(query).all()
    truncated = len(rows) > limit
    rows = rows[:limit]
    users = _users_of(conn, [r.user for r in rows]) if "user" in groups else {}
    results = []
    for row in rows:
        count = int(row._mapping["count"] or 0)
        item: dict[str, Any] = {}
        for group in groups:
            value = getattr(row, group)
            if group == "event_name":
                item["event_name"] = value
            elif group == "campaign":
                item["campaign_id"] = None if value is None else int(value)
            elif group == "day":
                item["day"] = day_text(int(value))
            else:
                item["user"] = users.get(value, {"external_id": None, "anonymous_id": None})
        item.update(
            count=count,
            unique_user_count=int(row.unique_user_count or 0),
            first_seen_at=row.first_seen_at if count else None,
            last_seen_at=row.last_seen_at if count else None,
        )
        results.append(item)
    return Aggregation(results=results, source=chosen, truncated=truncated)


def _from_user_days(conn: Connection, f: EventFilter, groups: list[str], limit: int) -> Aggregation:
    """No grouping, ``event_name`` or ``day``: the counts and first/last seen summed from
    the rollups, the unique users counted in the user-days, the same groups in the same
    order (a key has rollups exactly when it has user-days)."""
    r = event_rollups.c
    u = event_user_days.c
    rkeys = {"event_name": r.name, "day": r.day}
    ukeys = {"event_name": u.name, "day": u.day}
    rwhere = [r.project_id == f.project_id, r.day >= f.start, r.day < f.end]
    uwhere = [u.project_id == f.project_id, u.day >= f.start, u.day < f.end]
    if f.names:
        rwhere.append(r.name.in_(f.names))
        uwhere.append(u.name.in_(f.names))
    counted = sa.select(
        *[rkeys[g].label(g) for g in groups],
        sa.func.sum(r.count).label("count"),
        sa.func.min(r.first_seen_at).label("first_seen_at"),
        sa.func.max(r.last_seen_at).label("last_seen_at"),
    ).where(*rwhere)
    users = sa.select(
        *[ukeys[g].label(g) for g in groups],
        sa.func.count(sa.distinct(u.profile_id)).label("unique_user_count"),
    ).where(*uwhere)
    if groups:
        counted = counted.group_by(*[rkeys[g] for g in groups])
        users = users.group_by(*[ukeys[g] for g in groups])
        counted = counted.order_by(*[rkeys[g] for g in groups]).limit(limit + 1)
        users = users.order_by(*[ukeys[g] for g in groups]).limit(limit + 1)
    unique = {tuple(row[:-1]): int(row[-1] or 0) for row in conn.execute(users)}
    rows = conn.execute(counted).all()
    truncated = len(rows) > limit
    results = []
    for row in rows[:limit]:
        count = int(row._mapping["count"] or 0)
        item: dict[str, Any] = {}
        for group in groups:
            value = getattr(row, group)
            item[group] = day_text(int(value)) if group == "day" else value
        item.update(
            count=count,
            unique_user_count=unique.get(tuple(row[: len(groups)]), 0),
            first_seen_at=row.first_seen_at if count else None,
            last_seen_at=row.last_seen_at if count else None,
        )
        results.append(item)
    return Aggregation(results=results, source="user_days", truncated=truncated)


def _rollup_totals(conn: Connection, f: EventFilter, by_name: bool, limit: int) -> list[Any]:
    """Counts, user-days and first/last seen from ``event_rollups``: per name (at most
    ``limit + 1`` names) or one total row."""
    r = event_rollups.c
    where = [r.project_id == f.project_id, r.day >= f.start, r.day < f.end]
    if f.names:
        where.append(r.name.in_(f.names))
    measures = (
        sa.func.coalesce(sa.func.sum(r.count), 0).label("count"),
        sa.func.coalesce(sa.func.sum(r.users), 0).label("users"),
        sa.func.min(r.first_seen_at).label("first_seen_at"),
        sa.func.max(r.last_seen_at).label("last_seen_at"),
    )
    if by_name:
        query = sa.select(r.name, *measures).where(*where).group_by(r.name)
        return list(conn.execute(query.order_by(r.name).limit(limit + 1)).all())
    return [conn.execute(sa.select(*measures).where(*where)).one()]


def _from_sketches(
    conn: Connection, f: EventFilter, groups: list[str], limit: int, totals: list[Any]
) -> Aggregation:
    """Counts and first/last seen from the rollups (exact); unique users estimated from
    the union of the day sketches (store/hll.py: ~1.6% standard error)."""
    sketches = sketches_of(conn, f.project_id, f.names, f.start, f.end)
    results = []
    for t in totals[:limit]:
        count = int(t._mapping["count"] or 0)
        if groups:
            unique = hll.union(sketches.get(t.name, []))
        else:
            unique = hll.union(s for days in sketches.values() for s in days)
        item: dict[str, Any] = {"event_name": t.name} if groups else {}
        item.update(
            count=count,
            unique_user_count=unique if count else 0,
            first_seen_at=t.first_seen_at if count else None,
            last_seen_at=t.last_seen_at if count else None,
        )
        results.append(item)
    return Aggregation(results=results, source="sketches", truncated=len(totals) > limit)


def _users_of(conn: Connection, profile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Profiles → ``{external_id, anonymous_id}`` (its first anonymous id)."""
    ids = sorted(set(profile_ids))
    shown: dict[str, dict[str, Any]] = {i: {"external_id": None, "anonymous_id": None} for i in ids}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for profile_id, external_id in conn.execute(
            sa.select(profiles.c.id, profiles.c.external_id).where(profiles.c.id.in_(chunk))
        ):
            shown[profile_id]["external_id"] = external_id
        for profile_id, value in conn.execute(
            sa.select(identities.c.profile_id, identities.c.value)
            .where(identities.c.profile_id.in_(chunk), identities.c.kind == "anonymous")
            .order_by(identities.c.created_at.desc(), identities.c.value.desc())
        ):
            shown[profile_id]["anonymous_id"] = value  # the earliest one is written last
    return shown
