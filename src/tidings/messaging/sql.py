"""Small SQL helpers shared by the messaging stores (both databases)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = [
    "insert_ignoring",
    "is_postgres",
    "lock_profile",
    "profile_lock_key",
    "try_lock_profiles",
]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def insert_ignoring(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]] | dict[str, Any],
    conflict: Sequence[str],
    *,
    returning: sa.Column[Any] | None = None,
) -> list[Any]:
    """INSERT … ON CONFLICT (``conflict``) DO NOTHING; with ``returning``, the values of
    the rows that were inserted (one row at a time on SQLite, where RETURNING with
    several rows needs no more than that)."""
    insert = (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)
    statement = insert.on_conflict_do_nothing(index_elements=list(conflict))
    if returning is None:
        if rows:
            conn.execute(statement, rows)
        return []
    returning_statement = statement.returning(returning)
    if isinstance(rows, dict):
        return list(conn.execute(returning_statement, rows).scalars())
    out: list[Any] = []
    for row in rows:
        out.extend(conn.execute(returning_statement, row).scalars())
    return out


# Advisory locks (PostgreSQL) on a profile's subscription state: an unsubscribe holds one
# until it commits, and a claim only takes profiles whose lock it can get at once (see
# messaging/subscriptions.py).
PROFILE_LOCK_SPACE = 7_013


def profile_lock_key(profile_id: str) -> int:
    """A signed 32-bit key for ``profile_id``."""
    value = zlib.crc32(profile_id.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_profile(conn: Connection, profile_id: str) -> None:
    if is_postgres(conn):
        conn.execute(
            sa.select(
                sa.func.pg_advisory_xact_lock(PROFILE_LOCK_SPACE, profile_lock_key(profile_id))
            )
        )


def try_lock_profiles(conn: Connection, profile_ids: Sequence[str]) -> set[str]:
    """The profiles whose lock this transaction got (all of them on SQLite)."""
    if not is_postgres(conn) or not profile_ids:
        return set(profile_ids)
    ordered = sorted(set(profile_ids))
    keys = [profile_lock_key(p) for p in ordered]
    got = conn.execute(
        sa.text(
            "SELECT k, pg_try_advisory_xact_lock(:space, k) FROM unnest(CAST(:keys AS int[])) AS k"
        ),
        {"space": PROFILE_LOCK_SPACE, "keys": keys},
    ).all()
    ok = {k for k, locked in got if locked}
    return {p for p, k in zip(ordered, keys, strict=True) if k in ok}
