"""Dialect fast paths the engine shares: insert-or-ignore and counter upserts (``ON
CONFLICT`` on both SQLite and PostgreSQL), and ``FOR UPDATE SKIP LOCKED`` claims."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = [
    "add_counts",
    "id_values",
    "ids_in",
    "insert_ignore",
    "insert_ignore_many",
    "run_many",
    "skip_locked",
    "upsert_many",
]


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_STATEMENTS: dict[tuple[str, str, str], Any] = {}


def insert_ignore(
    conn: Connection, table: sa.Table, values: Mapping[str, Any], returning: Any = None
) -> Any:
    """Insert ``values`` unless a unique key already holds them; with ``returning``, the
    returned column of the new row, or None when it was already there. The statement
    is built once per table and takes the values as parameters (building one with the
    values inside costs more than running it)."""
    key = (conn.dialect.name, table.name, "" if returning is None else returning.name)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _insert(conn, table).on_conflict_do_nothing()
        if returning is not None:
            stmt = stmt.returning(returning)
        _STATEMENTS[key] = stmt
    result = conn.execute(stmt, dict(values))
    if returning is None:
        return result.rowcount
    return result.scalar_one_or_none()


def insert_ignore_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``insert_ignore`` for many rows in one statement (executemany)."""
    if rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(), rows)


def upsert_many(
    conn: Connection, table: sa.Table, keys: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """Insert each row, or overwrite the non-key columns of the row with the same keys."""
    if not rows:
        return
    stmt = _insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: stmt.excluded[c] for c in rows[0] if c not in keys},
    )
    conn.execute(stmt, rows)


def add_counts(
    conn: Connection, table: sa.Table, keys: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """Add each row's non-key numbers to the stored row with the same keys (or insert it).
    Rows go in key order, so that two transactions lock counters in the same order."""
    if not rows:
        return
    counted = [c for c in rows[0] if c not in keys]
    for row in sorted(rows, key=lambda r: tuple(r[k] for k in keys)):
        stmt = _insert(conn, table).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: table.c[c] + stmt.excluded[c] for c in counted},
        )
        conn.execute(stmt)


def skip_locked(conn: Connection, query: sa.Select[Any], *of: Any) -> sa.Select[Any]:
    """PostgreSQL: lock the rows read, skipping those another worker holds. SQLite has one
    writer at a time (the writer lock), so its claims need no row locks."""
    if conn.dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=list(of) or None)
    return query


def id_values(conn: Connection, ids: Sequence[Any], type_: Any = sa.BigInteger) -> Any:
    """A one-column SELECT of ``ids``, bound as one parameter whatever their number: an
    array (``unnest``) on PostgreSQL, a JSON text (``json_each``) on SQLite. Binding
    thousands of ids one parameter each costs more in SQLAlchemy than the statement."""
    if conn.dialect.name == "postgresql":
        array = sa.literal(list(ids), postgresql.ARRAY(type_))
        return sa.select(sa.func.unnest(array).column_valued("v"))
    each = sa.func.json_each(sa.literal(json.dumps(list(ids)))).table_valued("value")
    return sa.select(each.c.value)


def ids_in(conn: Connection, column: Any, ids: Sequence[Any], type_: Any = sa.BigInteger) -> Any:
    """``column IN ids`` for thousands of ids, in one parameter (see ``id_values``)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(list(ids), postgresql.ARRAY(type_)))
    return column.in_(id_values(conn, ids, type_))


def run_many(
    conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]], pg: str | None = None
) -> None:
    """Run ``sql`` (``?`` placeholders) once per row through the driver's own
    executemany: no per-row parameter processing (plain numbers and text only). On
    PostgreSQL, ``pg`` is one set-based statement instead, taking each column as an array
    parameter (``unnest(%s::bigint[], …)``): a row at a time costs a round of the
    pipeline each there, many times the statement's own work."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        if pg is not None:
            conn.exec_driver_sql(pg, tuple(list(column) for column in zip(*rows, strict=True)))
            return
        sql = sql.replace("?", "%s")
    conn.exec_driver_sql(sql, list(rows))
