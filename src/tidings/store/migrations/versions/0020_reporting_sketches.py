"""Reporting: per-day HyperLogLog sketches of unique users instead of each user's last day.

``event_day_sketches`` (store/tables_reporting.py) gets one row per ``event_rollups`` key,
built here from ``event_user_days`` (one read of it, in key order); ``event_user_last``
goes (the sketches answer unique users over any range, docs/reporting.md).

Revision ID: 0020
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from tidings.store.rollups import rebuild_sketches

    op.create_table(
        "event_day_sketches",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("registers", sa.LargeBinary, nullable=True),
    )
    op.create_index(
        "ix_event_day_sketches_stale",
        "event_day_sketches",
        ["project_id", "name", "day"],
        sqlite_where=sa.text("registers IS NULL"),
        postgresql_where=sa.text("registers IS NULL"),
    )
    op.drop_table("event_user_last")
    rebuild_sketches(op.get_bind())


def downgrade() -> None:
    op.create_table(
        "event_user_last",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("last_day", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO event_user_last (project_id, name, profile_id, last_day) "
        "SELECT project_id, name, profile_id, MAX(day) FROM event_user_days "
        "GROUP BY project_id, name, profile_id"
    )
    op.drop_table("event_day_sketches")
