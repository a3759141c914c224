"""Reporting: a user-day says only that the user had the event that day.

``event_user_days`` kept a count and first/last seen per (project, name, day, profile),
so each event of a user-day already stored rewrote its row (on PostgreSQL a tuple lock
and an update, with their WAL). The rollups hold the counts and first/last seen per
(project, name, day) already; what the user-days are for is who had the event: exact
unique users, merges, the sketches. They are now inserted once (``ON CONFLICT DO
NOTHING``) and never updated; an erasure takes its counts from the events it deletes,
and ``group_by user`` is answered from the events (docs/reporting.md).

Downgrade puts the columns back, computed from the events.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_COLUMNS = ("count", "first_seen_at", "last_seen_at")


def upgrade() -> None:
    for column in _COLUMNS:
        op.execute(f"ALTER TABLE event_user_days DROP COLUMN {column}")


def downgrade() -> None:
    for column in _COLUMNS:
        op.add_column(
            "event_user_days",
            sa.Column(column, sa.BigInteger, nullable=False, server_default="0"),
        )
    day = "(e.created_at - ((e.created_at % 86400000000) + 86400000000) % 86400000000)"
    mine = (
        "e.project_id = event_user_days.project_id AND e.profile_id = event_user_days.profile_id"
        f" AND e.name = event_user_days.name AND {day} = event_user_days.day"
    )
    for column, measure in zip(
        _COLUMNS, ("COUNT(*)", "MIN(e.created_at)", "MAX(e.created_at)"), strict=True
    ):
        op.execute(
            f"UPDATE event_user_days SET {column} = "
            f"COALESCE((SELECT {measure} FROM events AS e WHERE {mine}), 0)"
        )
