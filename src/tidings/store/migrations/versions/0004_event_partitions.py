"""Events: de-duplication in a table of its own; monthly partitions on PostgreSQL.

- ``event_message_ids (project_id, message_id, created_at)`` takes over the unique
  ``(project_id, message_id)`` of ``events`` (back-filled from it).
- ``events`` is rebuilt: primary key ``(id, created_at)``, no unique constraint, an index
  on ``created_at`` for retention (BRIN on PostgreSQL). On PostgreSQL it becomes
  ``PARTITION BY RANGE (created_at)``: ``events_default``, a partition for each of the
  last 24 months that holds events, and the current month and the next two.

The rebuild copies every event (create the new table, copy, swap names, index): plan for
the time it takes on a large table. The downgrade reverses it; if the same message id
was stored twice meanwhile (a retry after the retention window), one copy is kept.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

COLUMNS = (
    "id, project_id, profile_id, message_id, name, external_id, anonymous_id, data, "
    "created_at, received_at, context"
)
MONTHS_AHEAD = 2
MONTHS_BACK = 24


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("anonymous_id", sa.String(255), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("context", Json, nullable=True),
    ]


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _month_micros(index: int) -> int:
    moment = datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


def _create_partition(index: int) -> None:
    name = f"events_{index // 12:04d}{index % 12 + 1:02d}"
    lower, upper = _month_micros(index), _month_micros(index + 1)
    op.execute(f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({lower}) TO ({upper})")


def _index_events() -> None:
    op.create_index(
        "ix_events_profile_time", "events", ["project_id", "profile_id", "created_at", "id"]
    )
    op.create_index("ix_events_created_at", "events", ["created_at"], postgresql_using="brin")


def upgrade() -> None:
    op.create_table(
        "event_message_ids",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO event_message_ids (project_id, message_id, created_at) "
        "SELECT project_id, message_id, created_at FROM events"
    )
    op.create_index("ix_event_message_ids_created_at", "event_message_ids", ["created_at"])

    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
        return
    op.create_table("_events_new", *_columns(), sa.PrimaryKeyConstraint("id", "created_at"))
    op.execute(f"INSERT INTO _events_new ({COLUMNS}) SELECT {COLUMNS} FROM events")
    op.drop_table("events")  # and its indexes
    op.rename_table("_events_new", "events")
    _index_events()


def _upgrade_postgresql() -> None:
    op.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    op.execute("ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey")
    op.execute("ALTER INDEX ix_events_profile_time RENAME TO ix_events_unpartitioned_profile")
    op.create_table(
        "events",
        *_columns(),
        sa.PrimaryKeyConstraint("id", "created_at", name="events_pkey"),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    current = _month_index(datetime.fromtimestamp(time.time(), UTC))
    earliest = _month_micros(current - MONTHS_BACK)
    with_events = {
        _month_index(row[0].replace(tzinfo=UTC))
        for row in op.get_bind().exec_driver_sql(
            "SELECT DISTINCT date_trunc('month', to_timestamp(created_at / 1000000.0) "
            "AT TIME ZONE 'UTC') FROM events_unpartitioned "
            f"WHERE created_at >= {earliest} AND created_at < {_month_micros(current)}"
        )
    }
    for index in sorted(with_events | set(range(current, current + MONTHS_AHEAD + 1))):
        _create_partition(index)
    op.execute(f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM events_unpartitioned")
    op.drop_table("events_unpartitioned")
    _index_events()
    op.execute("ANALYZE events")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events RENAME TO events_partitioned")
        op.execute("ALTER INDEX events_pkey RENAME TO events_partitioned_pkey")
        op.execute("ALTER INDEX ix_events_profile_time RENAME TO ix_events_partitioned_profile")
        op.execute("ALTER INDEX ix_events_created_at RENAME TO ix_events_partitioned_created")
        _create_unpartitioned("events")
        # The earliest copy of a message id stored twice (possible only across retention).
        op.execute(
            f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM events_partitioned "
            "ORDER BY created_at ON CONFLICT DO NOTHING"
        )
        op.drop_table("events_partitioned")  # and its partitions
    else:
        _create_unpartitioned("_events_old")
        op.execute(
            f"INSERT OR IGNORE INTO _events_old ({COLUMNS}) "
            f"SELECT {COLUMNS} FROM events ORDER BY created_at"
        )
        op.drop_table("events")  # and its indexes
        op.rename_table("_events_old", "events")
    op.create_index(
        "ix_events_profile_time", "events", ["project_id", "profile_id", "created_at", "id"]
    )
    op.drop_index("ix_event_message_ids_created_at", "event_message_ids")
    op.drop_table("event_message_ids")


def _create_unpartitioned(name: str) -> None:
    op.create_table(
        name,
        *_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "message_id", name="uq_events_project_message"),
    )
