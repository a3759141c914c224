"""Segments in real time: timers for the clock-driven changes, and back-fill progress.

- ``segment_timers (list_id, profile_id, due_at)``: when the clock alone will change
  whether a profile matches a dynamic list (an event leaving a rolling window).
- ``lists.backfill_version``, ``backfill_cursor``, ``backfill_done``, ``backfill_total``:
  where the back-fill of a dynamic list's current rule has got to.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BACKFILL_COLUMNS = ("backfill_version", "backfill_cursor", "backfill_done", "backfill_total")


def upgrade() -> None:
    op.create_table(
        "segment_timers",
        sa.Column("list_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("due_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_segment_timers_due", "segment_timers", ["due_at"])
    op.create_index("ix_segment_timers_profile", "segment_timers", ["profile_id"])
    op.add_column("lists", sa.Column("backfill_version", sa.Integer, nullable=True))
    op.add_column("lists", sa.Column("backfill_cursor", sa.String(32), nullable=True))
    op.add_column("lists", sa.Column("backfill_done", sa.BigInteger, nullable=True))
    op.add_column("lists", sa.Column("backfill_total", sa.BigInteger, nullable=True))


def downgrade() -> None:
    for name in reversed(_BACKFILL_COLUMNS):
        op.drop_column("lists", name)  # SQLite >= 3.35 drops columns in place
    op.drop_index("ix_segment_timers_profile", "segment_timers")
    op.drop_index("ix_segment_timers_due", "segment_timers")
    op.drop_table("segment_timers")
