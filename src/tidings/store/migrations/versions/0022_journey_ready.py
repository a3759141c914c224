"""Journeys: fired delays wait for their next step in ``journey_ready``.

Firing a due duration delay used to move the entrance to its next step, write two path
rows and turn the timer into a ``ready`` row of ``journey_timers`` (five row writes per
timer, and on PostgreSQL the entrance's update moves three of its index entries). It now
deletes the timer and inserts one row into this narrow table, keyed by the queue's order;
the entrance moves, and its path rows are written, when the ready queue runs its next step
(``journeys/timers.py``). Pending ``ready`` timers of the old kind are carried over.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journey_ready",
        sa.Column("due_at", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entrance_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("journey_id", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("fired_at", sa.BigInteger, nullable=False),
    )
    # An old ``ready`` timer's entrance was already moved to its next step: it runs from
    # there like a ``move`` (decided again at once).
    op.execute(
        "UPDATE journey_timers SET kind = 'move' WHERE kind = 'ready' AND entrance_id NOT IN"
        " (SELECT entrance_id FROM journey_timers WHERE kind = 'move')"
    )
    op.execute("DELETE FROM journey_timers WHERE kind = 'ready'")


def downgrade() -> None:
    op.drop_table("journey_ready")
