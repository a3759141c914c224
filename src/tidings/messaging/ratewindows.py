"""Providers' rate windows, shared by every worker: one counter row per (provider,
window start) in ``provider_windows``; a claim takes a share of the current window in
its own transaction (the row locked on PostgreSQL; SQLite has one writer)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.messaging.sql import insert_ignoring, is_postgres
from tidings.store.tables_messaging import provider_windows

__all__ = ["take"]


def take(conn: Connection, provider_id: int, start: int, limit: int, wanted: int) -> int:
    """Take up to ``wanted`` of the provider's window starting at ``start``; how many."""
    insert_ignoring(
        conn,
        provider_windows,
        {"provider_id": provider_id, "window_start": start, "used": 0},
        ("provider_id", "window_start"),
    )
    query = sa.select(provider_windows.c.used).where(
        provider_windows.c.provider_id == provider_id, provider_windows.c.window_start == start
    )
    if is_postgres(conn):
        query = query.with_for_update()
    used = int(conn.execute(query).scalar_one())
    granted = max(0, min(wanted, limit - used))
    if granted:
        conn.execute(
            sa.update(provider_windows)
            .where(
                provider_windows.c.provider_id == provider_id,
                provider_windows.c.window_start == start,
            )
            .values(used=provider_windows.c.used + granted)
        )
    conn.execute(
        sa.delete(provider_windows).where(
            provider_windows.c.provider_id == provider_id,
            provider_windows.c.window_start < start,
        )
    )
    return granted
