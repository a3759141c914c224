"""Recorded trait and event-property paths (the data schema).

A project records at most ``limits.MAX_SCHEMA_PATHS`` distinct rows: once it has that
many, paths seen for the first time are no longer recorded (their values are still
stored in the events and profiles that hold them; ``last_seen_at`` of the recorded ones
still moves). Each store keeps a count per project so that the usual batch does not
count: it counts again only when the count it knows, plus the batch's rows, could pass
the limit. With several workers the limit may be passed by at most one batch's new rows
per worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.domain import limits
from tidings.store import cursors
from tidings.store.database import Writer
from tidings.store.tables import schema_paths

__all__ = ["SchemaPage", "SchemaRow", "SchemaStore"]

SchemaRow = tuple[int, str, str, str, str]  # project, source, event name, path, type
SchemaPage = tuple[list[dict[str, Any]], str | None]  # rows, the next page's cursor
_KEY = (schema_paths.c.source, schema_paths.c.event_name, schema_paths.c.path, schema_paths.c.type)


class SchemaStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.reader = reader
        insert = postgresql.insert if writer.dialect.name == "postgresql" else sqlite.insert
        statement = insert(schema_paths)
        self._upsert = statement.on_conflict_do_update(
            index_elements=["project_id", "source", "event_name", "path", "type"],
            set_={"last_seen_at": statement.excluded.last_seen_at},
        )
        self._counts: dict[int, int] = {}  # rows per project, as last known (see above)

    def record(self, conn: Connection, rows: Iterable[SchemaRow], now: int) -> None:
        by_project: dict[int, list[dict[str, Any]]] = {}
        for project_id, source, event_name, path, kind in rows:
            by_project.setdefault(project_id, []).append(
                {
                    "project_id": project_id,
                    "source": source,
                    "event_name": event_name,
                    "path": path[:512],
                    "type": kind,
                    "first_seen_at": now,
                    "last_seen_at": now,
                }
            )
        for project_id, values in by_project.items():
            known = self._counts.get(project_id)
            if known is None or known + len(values) > limits.MAX_SCHEMA_PATHS:
                known = self._count(conn, project_id)
                if known + len(values) > limits.MAX_SCHEMA_PATHS:
                    values = self._within_limit(conn, project_id, values, known)
            if values:
                conn.execute(self._upsert, values)
            # An over-estimate (some rows were known already): counted again near the limit.
            self._counts[project_id] = known + len(values)

    @staticmethod
    def _count(conn: Connection, project_id: int) -> int:
        query = sa.select(sa.func.count()).where(schema_paths.c.project_id == project_id)
        return int(conn.execute(query).scalar_one())

    @staticmethod
    def _within_limit(
        conn: Connection, project_id: int, values: list[dict[str, Any]], count: int
    ) -> list[dict[str, Any]]:
        """The rows already recorded (their last_seen_at moves on), and as many new ones as
        the limit leaves room for."""
        stored: set[tuple[str, str, str, str]] = set()
        for start in range(0, len(values), 200):
            chunk = values[start : start + 200]
            keys = [(v["source"], v["event_name"], v["path"], v["type"]) for v in chunk]
            stored.update(
                (r.source, r.event_name, r.path, r.type)
                for r in conn.execute(
                    sa.select(*_KEY).where(
                        schema_paths.c.project_id == project_id, sa.tuple_(*_KEY).in_(keys)
                    )
                )
            )
        room = max(limits.MAX_SCHEMA_PATHS - count, 0)
        kept = []
        for value in values:
            if (value["source"], value["event_name"], value["path"], value["type"]) in stored:
                kept.append(value)
            elif room > 0:
                kept.append(value)
                room -= 1
        return kept

    def list(
        self,
        project_id: int,
        *,
        source: str | None = None,
        event_name: str | None = None,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> SchemaPage:
        """One page of the project's paths, in (source, event name, path, type) order."""
        query = sa.select(schema_paths).where(schema_paths.c.project_id == project_id)
        if source is not None:
            query = query.where(schema_paths.c.source == source)
        if event_name is not None:
            query = query.where(schema_paths.c.event_name == event_name)
        if cursor:
            after = cursors.decode(cursor, tuple[Literal["trait", "event"], str, str, str])
            query = query.where(sa.tuple_(*_KEY) > tuple(after))
        query = query.order_by(*_KEY).limit(limit + 1)
        with self.reader.connect() as conn:
            rows = list(conn.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:
            last = rows[-1]
            next_cursor = cursors.encode(last.source, last.event_name, last.path, last.type)
        return [
            {
                "source": row.source,
                "event_name": row.event_name or None,
                "path": row.path,
                "type": row.type,
                "first_seen_at": row.first_seen_at,
                "last_seen_at": row.last_seen_at,
            }
            for row in rows
        ], next_cursor
