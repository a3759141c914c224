"""The tables of the reporting area, on the shared metadata of store/tables.py
(which imports this module, so that migrations and their tests see one schema).

Rollups (migration 0016, maintained by ``reporting.rollups.RollupHook`` in each batch's
transaction; see docs/reporting.md):

- ``event_user_days``: one row per (project, event name, UTC day, profile) that has at
  least one such event: inserted by the first one, never updated (migration 0024 dropped
  its count and first/last seen: the rollups have them per key). It is what makes unique
  users exact: a user is counted once per row, and distinct users over several days are
  the distinct ``profile_id`` of the rows.
- ``event_rollups``: one row per (project, event name, UTC day): the event count, the
  number of distinct users (= rows of ``event_user_days`` for the key), first/last seen.

- ``event_day_sketches`` (migration 0020): one row per rollup key, the HyperLogLog
  registers of the key's users (store/hll.py, 4 KiB, or sparse when that is shorter), so
  that unique users over many days are a merge of one row per day instead of a distinct
  count over every user-day (approximate, ~1.6% standard error; docs/reporting.md says
  when it is used).
  On PostgreSQL ``registers`` is stored in the row, uncompressed (migration 0023), so
  that rewriting a sketch does not compress it and write it out of line each time.
  ``registers`` NULL means stale (a merge or an erasure touched the day): the sketch is
  then computed from ``event_user_days`` until the hook rebuilds it.

``day`` is the microsecond timestamp of the UTC midnight that starts the day.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Micros, events, metadata

__all__ = ["event_day_sketches", "event_rollups", "event_user_days"]

event_rollups = sa.Table(
    "event_rollups",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("day", Micros, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("users", sa.BigInteger, nullable=False),
    sa.Column("first_seen_at", Micros, nullable=False),
    sa.Column("last_seen_at", Micros, nullable=False),
    sqlite_with_rowid=False,  # one B-tree, the key's, instead of a table and an index
)

event_user_days = sa.Table(
    "event_user_days",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("day", Micros, primary_key=True, autoincrement=False),
    sa.Column("profile_id", sa.String(32), primary_key=True),
    # Merges and erasures move or remove one profile's rows.
    sa.Index("ix_event_user_days_profile", "project_id", "profile_id"),
    sqlite_with_rowid=False,  # one B-tree, the key's, instead of a table and an index
)

event_day_sketches = sa.Table(
    "event_day_sketches",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("day", Micros, primary_key=True, autoincrement=False),
    sa.Column("registers", sa.LargeBinary, nullable=True),
    # The stale ones, which each batch looks for: an index of them only (usually empty).
    sa.Index(
        "ix_event_day_sketches_stale",
        "project_id",
        "name",
        "day",
        sqlite_where=sa.text("registers IS NULL"),
        postgresql_where=sa.text("registers IS NULL"),
    ),
)

# Project-wide reads of events in time order (GET /events, exports, aggregations that
# cannot use the rollups): migration 0016.
sa.Index("ix_events_project_time", events.c.project_id, events.c.created_at, events.c.id)
