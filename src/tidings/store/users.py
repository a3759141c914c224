"""Reads behind the users API: the profile list and search, and filtered timelines.

Both lists use keyset pagination over an index, newest first. A cursor is the position of
the row at a page's edge, made and checked by ``store/cursors.py``:

- profiles: ``["n"|"p", created_at, id]`` — ``n`` continues with older rows (next page),
  ``p`` with newer rows (previous page);
- events: ``[created_at, id]`` (older rows only), the format the timeline always had.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.store import cursors
from tidings.store.tables import (
    devices,
    events,
    identities,
    merge_rejections,
    profiles,
)

__all__ = ["Page", "UserQueries"]

_CHUNK = 300
SEARCH_CANDIDATES = 2000  # more profiles than this match a search: test the newest in turn
# Sorts after every string that starts with the prefix (byte order; SQLite's BINARY).
_MAX_CHAR = "\U0010ffff"
_PHONE_NOISE = re.compile(r"[\s().-]")
_PHONE_PREFIX = re.compile(r"^\+?[0-9]+$")

Direction = Literal["n", "p"]


@dataclass(slots=True)
class Page:
    results: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


def encode_profile_cursor(direction: Direction, created_at: int, profile_id: str) -> str:
    return cursors.encode(direction, created_at, profile_id)


def decode_profile_cursor(cursor: str) -> tuple[Direction, int, str]:
    direction, created_at, profile_id = cursors.decode(cursor, tuple[Literal["n", "p"], int, str])
    return direction, created_at, profile_id


def encode_event_cursor(created_at: int, event_id: str) -> str:
    return cursors.encode(created_at, event_id)


def decode_event_cursor(cursor: str) -> tuple[int, str]:
    created_at, event_id = cursors.decode(cursor, tuple[int, str])
    return created_at, event_id


def _before(time_col: Any, id_col: Any, created_at: int, row_id: str) -> Any:
    """Rows older than the position; the plain ``<=`` bounds the index range."""
    return sa.and_(
        time_col <= created_at,
        sa.or_(time_col < created_at, id_col < row_id),
    )


def _after(time_col: Any, id_col: Any, created_at: int, row_id: str) -> Any:
    return sa.and_(
        time_col >= created_at,
        sa.or_(time_col > created_at, id_col > row_id),
    )


class UserQueries:
    """Read-only queries on the reader engine (never waits for writers)."""

    def __init__(self, reader: Engine) -> None:
        self.reader = reader
        self._sqlite = reader.dialect.name == "sqlite"

    # -- the profile list -----------------------------------------------------------------

    def _starts_with(self, column: Any, prefix: str) -> Any:
        """Case-sensitive prefix match. On SQLite a range on the column (so an index serves
        it; LIKE there ignores case and skips indexes) plus an exact check of the prefix."""
        if self._sqlite:
            return sa.and_(
                column >= prefix,
                column < prefix + _MAX_CHAR,
                sa.func.substr(column, 1, len(prefix)) == prefix,
            )
        return column.startswith(prefix, autoescape=True)

    def _matches(self, conn: Connection, project_id: int, q: str) -> list[str] | None:
        """The ids of the profiles ``_search`` finds, each kind of identifier looked up
        in its own index; None when there are more than ``SEARCH_CANDIDATES`` (a short,
        common prefix), for which walking the newest profiles and testing each is cheaper.
        With the ids in hand the page reads them by key and sorts a few rows, instead of
        testing every profile of the project in turn (1.1 s at a million profiles)."""
        cap = SEARCH_CANDIDATES + 1
        queries = [
            sa.select(identities.c.profile_id).where(
                identities.c.project_id == project_id,
                identities.c.kind.in_(("external", "anonymous")),
                self._starts_with(identities.c.value, q),
            ),
            sa.select(profiles.c.id).where(
                profiles.c.project_id == project_id,
                self._starts_with(sa.func.lower(profiles.c.email), q.lower())
                if self._sqlite
                else sa.func.lower(profiles.c.email).startswith(q.lower(), autoescape=True),
            ),
        ]
        phone = _PHONE_NOISE.sub("", q)
        if _PHONE_PREFIX.match(phone):
            queries.append(
                sa.select(profiles.c.id).where(
                    profiles.c.project_id == project_id, self._starts_with(profiles.c.phone, phone)
                )
            )
        found: set[str] = set()
        for query in queries:
            found.update(conn.execute(query.limit(cap)).scalars())
            if len(found) >= cap:
                return None
        return sorted(found)

    def _search(self, project_id: int, q: str) -> Any:
        """Profiles whose external id, an anonymous id, email (ignoring case) or phone
        starts with ``q``."""
        # Correlated: probed for each profile tested (ix_identities_profile), so that a
        # common prefix is not first gathered whole.
        by_identity = (
            sa.select(identities.c.profile_id)
            .where(
                identities.c.profile_id == profiles.c.id,
                identities.c.project_id == project_id,
                identities.c.kind.in_(("external", "anonymous")),
                self._starts_with(identities.c.value, q),
            )
            .exists()
        )
        conditions = [
            by_identity,
            sa.func.lower(profiles.c.email).startswith(q.lower(), autoescape=True),
        ]
        phone = _PHONE_NOISE.sub("", q)
        if _PHONE_PREFIX.match(phone):  # phones are stored in E.164: "+" and digits
            conditions.append(self._starts_with(profiles.c.phone, phone))
        return sa.or_(*conditions)

    def list_profiles(
        self, project_id: int, *, limit: int, cursor: str | None = None, q: str | None = None
    ) -> Page:
        position = decode_profile_cursor(cursor) if cursor else None
        scope = [profiles.c.project_id == project_id]
        if q:
            with self.reader.connect() as conn:
                matches = self._matches(conn, project_id, q)
            if matches is None:
                scope.append(self._search(project_id, q))
            else:
                scope.append(profiles.c.id.in_(matches))
        created, pid = profiles.c.created_at, profiles.c.id
        query = sa.select(profiles).where(*scope)
        backwards = position is not None and position[0] == "p"
        if position is None:
            query = query.order_by(created.desc(), pid.desc())
        elif backwards:
            query = query.where(_after(created, pid, position[1], position[2]))
            query = query.order_by(created.asc(), pid.asc())
        else:
            query = query.where(_before(created, pid, position[1], position[2]))
            query = query.order_by(created.desc(), pid.desc())
        with self.reader.connect() as conn:
            rows = list(conn.execute(query.limit(limit + 1)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            if backwards:
                rows.reverse()
            # The page's edges: its first and last rows, or the cursor's position if empty.
            top = (rows[0].created_at, rows[0].id) if rows else None
            bottom = (rows[-1].created_at, rows[-1].id) if rows else None
            if position is not None:
                top = top or (position[1], position[2])
                bottom = bottom or (position[1], position[2])
            if backwards:
                has_prev = more
                has_next = bottom is not None and self._exists(
                    conn, scope, _before(created, pid, *bottom)
                )
            else:
                has_next = more
                has_prev = (
                    position is not None
                    and top is not None
                    and self._exists(conn, scope, _after(created, pid, *top))
                )
            results = self._present(conn, project_id, rows)
        return Page(
            results=results,
            next_cursor=encode_profile_cursor("n", *bottom) if has_next and bottom else None,
            prev_cursor=encode_profile_cursor("p", *top) if has_prev and top else None,
            limit=limit,
        )

    @staticmethod
    def _exists(conn: Connection, scope: list[Any], condition: Any) -> bool:
        query = sa.select(profiles.c.id).where(*scope, condition).limit(1)
        return conn.execute(query).first() is not None

    @staticmethod
    def _present(conn: Connection, project_id: int, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows in the shape of ``ProfileStore.get_profile``, with their anonymous ids,
        devices and refused merges loaded for the whole page at once."""
        ids = [row.id for row in rows]
        anonymous: dict[str, list[str]] = {i: [] for i in ids}
        owned: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        refused: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        rejections = merge_rejections.c
        for chunk in _chunks(ids):
            # A refusal is listed on both profiles it names, as GET /users/{id} shows it.
            for r in conn.execute(
                sa.select(merge_rejections)
                .where(
                    rejections.project_id == project_id,
                    sa.or_(
                        rejections.profile_id.in_(chunk), rejections.other_profile_id.in_(chunk)
                    ),
                )
                .order_by(rejections.created_at, rejections.id)
            ):
                shown = {
                    "anonymous_id": r.anonymous_id,
                    "external_id": r.external_id,
                    "reason": r.reason,
                    "created_at": r.created_at,
                }
                for owner in dict.fromkeys((r.profile_id, r.other_profile_id)):
                    if owner in refused:
                        refused[owner].append(shown)
            for profile_id, value in conn.execute(
                sa.select(identities.c.profile_id, identities.c.value)
                .where(
                    identities.c.profile_id.in_(chunk),
                    identities.c.project_id == project_id,
                    identities.c.kind == "anonymous",
                )
                .order_by(identities.c.created_at, identities.c.value)
            ):
                anonymous[profile_id].append(value)
            for d in conn.execute(
                sa.select(devices)
                .where(devices.c.profile_id.in_(chunk), devices.c.project_id == project_id)
                .order_by(devices.c.updated_at.desc())
            ):
                owned[d.profile_id].append(
                    {
                        "device_id": d.device_id,
                        "token": d.token,
                        "os": d.os,
                        "os_version": d.os_version,
                        "model": d.model,
                        "app_build": d.app_build,
                        "app_version": d.app_version,
                        "sdk_version": d.sdk_version,
                        "created_at": d.created_at,
                        "updated_at": d.updated_at,
                    }
                )
        return [
            {
                "id": row.id,
                "project_id": project_id,
                "external_id": row.external_id,
                "anonymous_ids": anonymous[row.id],
                "email": row.email,
                "phone": row.phone,
                "timezone": row.timezone,
                "locale": row.locale,
                "data": row.data or {},
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "devices": owned[row.id],
                "merge_rejections": refused[row.id],
            }
            for row in rows
        ]

    # -- lookups for erasure ----------------------------------------------------------------

    def known_external_ids(self, project_id: int, external_ids: Iterable[str]) -> set[str]:
        """Which of these external ids have a profile in the project."""
        wanted = list(dict.fromkeys(external_ids))
        found: set[str] = set()
        with self.reader.connect() as conn:
            for chunk in _chunks(wanted):
                found.update(
                    conn.execute(
                        sa.select(identities.c.value).where(
                            identities.c.project_id == project_id,
                            identities.c.kind == "external",
                            identities.c.value.in_(chunk),
                        )
                    ).scalars()
                )
        return found

    # -- the timeline -------------------------------------------------------------------------

    def list_events(
        self,
        project_id: int,
        profile_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        include_payload: bool = True,
        names: Sequence[str] = (),
        since: int | None = None,
        until: int | None = None,
    ) -> Page:
        """The profile's events, newest first; ``names`` (any of), ``since`` (inclusive) and
        ``until`` (exclusive) filter on name and ``created_at``."""
        created, eid = events.c.created_at, events.c.id
        query = sa.select(
            eid, events.c.name, created, events.c.external_id, events.c.anonymous_id, events.c.data
        ).where(events.c.project_id == project_id, events.c.profile_id == profile_id)
        if names:
            query = query.where(events.c.name.in_(list(dict.fromkeys(names))))
        if since is not None:
            query = query.where(created >= since)
        if until is not None:
            query = query.where(created < until)
        if cursor:
            query = query.where(_before(created, eid, *decode_event_cursor(cursor)))
        query = query.order_by(created.desc(), eid.desc()).limit(limit + 1)
        with self.reader.connect() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        results = []
        for row in rows:
            item: dict[str, Any] = {
                "id": row.id,
                "name": row.name,
                "created_at": row.created_at,
                "external_id": row.external_id,
                "anonymous_id": row.anonymous_id,
            }
            if include_payload:
                item["data"] = row.data or {}
            results.append(item)
        return Page(
            results=results,
            next_cursor=encode_event_cursor(rows[-1].created_at, rows[-1].id) if more else None,
            prev_cursor=None,
            limit=limit,
        )


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
