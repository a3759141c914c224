"""Recorded trait and event-property paths (the data schema)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.store.database import Writer
from tidings.store.tables import schema_paths

__all__ = ["SchemaRow", "SchemaStore"]

SchemaRow = tuple[int, str, str, str, str]  # project, source, event name, path, type


class SchemaStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.reader = reader
        insert = postgresql.insert if writer.dialect.name == "postgresql" else sqlite.insert
        statement = insert(schema_paths)
        self._upsert = statement.on_conflict_do_update(
            index_elements=["project_id", "source", "event_name", "path", "type"],
            set_={"last_seen_at": statement.excluded.last_seen_at},
        )

    def record(self, conn: Connection, rows: Iterable[SchemaRow], now: int) -> None:
        values = [
            {
                "project_id": project_id,
                "source": source,
                "event_name": event_name,
                "path": path[:512],
                "type": kind,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for project_id, source, event_name, path, kind in rows
        ]
        if values:
            conn.execute(self._upsert, values)

    def list(
        self, project_id: int, *, source: str | None = None, event_name: str | None = None
    ) -> list[dict[str, Any]]:
        query = sa.select(schema_paths).where(schema_paths.c.project_id == project_id)
        if source is not None:
            query = query.where(schema_paths.c.source == source)
        if event_name is not None:
            query = query.where(schema_paths.c.event_name == event_name)
        query = query.order_by(
            schema_paths.c.source,
            schema_paths.c.event_name,
            schema_paths.c.path,
            schema_paths.c.type,
        )
        with self.reader.connect() as conn:
            return [
                {
                    "source": row.source,
                    "event_name": row.event_name or None,
                    "path": row.path,
                    "type": row.type,
                    "first_seen_at": row.first_seen_at,
                    "last_seen_at": row.last_seen_at,
                }
                for row in conn.execute(query)
            ]
