"""Journeys: bulk firing of delay timers, resuming, and list entrances without a horizon.

- ``ix_journey_timers_step`` (step_id, kind, due_at): the due timers of one delay step,
  which the worker fires together.
- ``journeys.live_at``: when the journey last went live (published or turned back on):
  list entrances enter joins from then on.
- ``journey_marks``: named points in time the worker keeps (how far list changes were
  handled), so that a worker down for days misses nothing.

See ``store/tables_journeys.py``.

Revision ID: 0019
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_journey_timers_step", "journey_timers", ["step_id", "kind", "due_at"])
    with op.batch_alter_table("journeys") as batch:
        batch.add_column(sa.Column("live_at", sa.BigInteger, nullable=True))
    op.execute("UPDATE journeys SET live_at = published_at WHERE status = 'live'")
    op.create_table(
        "journey_marks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("journey_marks")
    with op.batch_alter_table("journeys") as batch:
        batch.drop_column("live_at")
    op.drop_index("ix_journey_timers_step", table_name="journey_timers")
