"""Multi-row INSERT statements at driver level, and COPY on PostgreSQL.

``executemany`` steps the database once per row, and the SQLite driver releases and
re-takes the GIL around every step; with a busy event loop in the same process each
re-take can wait a whole switch interval. One ``INSERT … VALUES (…), (…), …`` per few
hundred rows steps once (measured in docs/benchmarks.md).

On PostgreSQL, plain inserts (no ``ON CONFLICT``) use ``COPY … FROM STDIN`` instead (JSON
columns are passed as JSON text, which COPY parses like a literal):
measured with psycopg 3 on 5,000 ingest log rows, 176 ms as multi-row INSERTs against
36 ms with COPY (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

from sqlalchemy.engine import Connection

__all__ = ["BulkInsert"]

_MAX_PARAMETERS = 30_000  # below SQLite's 32,766 and PostgreSQL's 65,535


class BulkInsert:
    """``INSERT INTO table (columns) VALUES … [suffix]`` for many rows at once."""

    def __init__(
        self,
        dialect_name: str,
        paramstyle: str,
        table: str,
        columns: Sequence[str],
        *,
        json_columns: Sequence[str] = (),
        suffix: str = "",
        chunk: int = 500,
    ) -> None:
        mark = "?" if paramstyle == "qmark" else "%s"
        cast = "" if dialect_name == "sqlite" else "::jsonb"
        row = ", ".join(f"{mark}{cast}" if c in json_columns else mark for c in columns)
        self._row = f"({row})"
        self._copy = (
            f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            if dialect_name == "postgresql" and not suffix
            else None
        )
        self._head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        self._suffix = f" {suffix}" if suffix else ""
        self._width = len(columns)
        self._chunk = max(1, min(chunk, _MAX_PARAMETERS // self._width))
        self._sql: dict[int, str] = {}

    def _statement(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._head + ", ".join([self._row] * rows) + self._suffix
            if len(self._sql) < 64:
                self._sql[rows] = sql
        return sql

    def __call__(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        if self._copy is not None and rows:
            raw = conn.connection.dbapi_connection
            with raw.cursor() as cursor, cursor.copy(self._copy) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
            return
        for sql, params in self.statements(rows):
            conn.exec_driver_sql(sql, params)

    def statements(self, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """The INSERT statements for ``rows`` with their parameters (for a DBAPI cursor)."""
        for start in range(0, len(rows), self._chunk):
            chunk = rows[start : start + self._chunk]
            yield self._statement(len(chunk)), tuple(chain.from_iterable(chunk))
