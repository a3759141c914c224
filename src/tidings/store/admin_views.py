"""The admin UI's reads and writes that the other stores do not offer: a project's keys and
settings, the project list of the switcher, a profile's lists, and the recent events of the
live stream. Every read is bounded (an index range with a LIMIT): no page view counts a
large table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.domain.errors import NotFound
from tidings.store.database import Writer
from tidings.store.tables import api_keys, events, list_members, lists, projects

__all__ = ["AdminViews", "KeyRow", "StreamEvent"]


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    scope: str
    role: str | None
    hint: str
    name: str | None
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: str
    name: str
    profile_id: str
    external_id: str | None
    anonymous_id: str | None
    created_at: int
    received_at: int
    data: dict[str, Any]


MAX_PROJECTS = 500  # the switcher's list; more projects than that are reached by URL


class AdminViews:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    # -- projects ---------------------------------------------------------------------------

    def projects(self, ids: Iterable[int] | None = None) -> list[tuple[int, str]]:
        """(id, name) of the projects, or of those ``ids`` names, by id."""
        query = sa.select(projects.c.id, projects.c.name).order_by(projects.c.id)
        if ids is not None:
            query = query.where(projects.c.id.in_(sorted(set(ids))))
        with self.reader.connect() as conn:
            return [(int(i), str(n)) for i, n in conn.execute(query.limit(MAX_PROJECTS))]

    def update_project(
        self, project_id: int, *, name: str, locale: str | None, timezone: str | None
    ) -> None:
        with self.writer.begin() as conn:
            updated = conn.execute(
                sa.update(projects)
                .where(projects.c.id == project_id)
                .values(name=name, locale=locale, timezone=timezone)
            ).rowcount
        if not updated:
            raise NotFound(f"No project {project_id}.")

    # -- keys -------------------------------------------------------------------------------

    def keys(self, project_id: int, *, limit: int = 200) -> list[KeyRow]:
        """The project's keys, live ones first, newest first."""
        query = (
            sa.select(api_keys)
            .where(api_keys.c.project_id == project_id)
            .order_by(api_keys.c.revoked_at.is_not(None), api_keys.c.id.desc())
            .limit(limit)
        )
        with self.reader.connect() as conn:
            return [
                KeyRow(
                    id=r.id,
                    scope=r.scope,
                    role=r.role,
                    hint=r.hint,
                    name=r.name,
                    created_at=r.created_at,
                    revoked_at=r.revoked_at,
                )
                for r in conn.execute(query)
            ]

    def revoke_key(self, project_id: int, key_id: int, *, now: int) -> bool:
        """Revoke one of the project's keys; False if it has no such key."""
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.project_id == project_id)
                .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, now))
                .returning(api_keys.c.id)
            ).first()
        return row is not None

    # -- profiles -----------------------------------------------------------------------------

    def lists_of(
        self, project_id: int, profile_id: str, *, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The lists the profile is a member of, most recently joined first."""
        query = (
            sa.select(lists.c.id, lists.c.name, lists.c.type, list_members.c.added_at)
            .join_from(list_members, lists, lists.c.id == list_members.c.list_id)
            .where(
                list_members.c.profile_id == profile_id,
                lists.c.project_id == project_id,
                lists.c.deleted_at.is_(None),
            )
            .order_by(list_members.c.added_at.desc())
            .limit(limit)
        )
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # -- the live stream ----------------------------------------------------------------------

    def recent_events(
        self,
        project_id: int,
        *,
        since: int,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> list[StreamEvent]:
        """The project's newest events (by their time) at or after ``since``, newer than
        ``after`` (the newest one shown already), newest first. ``since`` bounds the index
        range read: on PostgreSQL one or two monthly partitions, by the BRIN index."""
        created, eid = events.c.created_at, events.c.id
        query = sa.select(
            eid,
            events.c.name,
            events.c.profile_id,
            events.c.external_id,
            events.c.anonymous_id,
            created,
            events.c.received_at,
            events.c.data,
        ).where(events.c.project_id == project_id, created >= since)
        if after is not None:
            query = query.where(created >= after[0], sa.or_(created > after[0], eid > after[1]))
        query = query.order_by(created.desc(), eid.desc()).limit(limit)
        with self.reader.connect() as conn:
            return [
                StreamEvent(
                    id=r.id,
                    name=r.name,
                    profile_id=r.profile_id,
                    external_id=r.external_id,
                    anonymous_id=r.anonymous_id,
                    created_at=r.created_at,
                    received_at=r.received_at,
                    data=r.data or {},
                )
                for r in conn.execute(query)
            ]
