"""Reporting: the event rollups and a project-wide time index on events.

``event_rollups``, ``event_user_days`` and ``event_user_last`` (store/tables_reporting.py)
are filled here from the events already stored (``INSERT … SELECT … GROUP BY``), so that
the rollups are true from the first batch the new version processes. On a large events
table this takes about as long as one scan of it (docs/reporting.md); run
``tidings migrate`` with the workers stopped.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

DAY = 86_400_000_000


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("users", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "event_user_days",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("first_seen_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_event_user_days_profile", "event_user_days", ["project_id", "profile_id"])
    op.create_table(
        "event_user_last",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("last_day", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_events_project_time", "events", ["project_id", "created_at", "id"])
    # The back-fill: floor division to the UTC day, the same on both databases (and for
    # times before 1970, where integer division truncates towards zero).
    day = f"(created_at - (((created_at % {DAY}) + {DAY}) % {DAY}))"
    op.execute(
        "INSERT INTO event_user_days "
        "(project_id, name, day, profile_id, count, first_seen_at, last_seen_at) "
        f"SELECT project_id, name, {day}, profile_id, COUNT(*), MIN(created_at), "
        f"MAX(created_at) FROM events GROUP BY project_id, name, {day}, profile_id"
    )
    op.execute(
        "INSERT INTO event_rollups "
        "(project_id, day, name, count, users, first_seen_at, last_seen_at) "
        "SELECT project_id, day, name, SUM(count), COUNT(*), MIN(first_seen_at), "
        "MAX(last_seen_at) FROM event_user_days GROUP BY project_id, day, name"
    )
    op.execute(
        "INSERT INTO event_user_last (project_id, name, profile_id, last_day) "
        "SELECT project_id, name, profile_id, MAX(day) FROM event_user_days "
        "GROUP BY project_id, name, profile_id"
    )


def downgrade() -> None:
    op.drop_index("ix_events_project_time", table_name="events")
    op.drop_index("ix_event_user_days_profile", table_name="event_user_days")
    op.drop_table("event_user_last")
    op.drop_table("event_user_days")
    op.drop_table("event_rollups")
