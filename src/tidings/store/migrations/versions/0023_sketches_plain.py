"""Reporting: the day sketches' registers are stored in their row on PostgreSQL.

A sketch is 4 KiB, over PostgreSQL's 2 KiB threshold, so each write compressed it and
stored it out of line (TOAST: chunk rows and their index); every batch with new users of
a key rewrites its sketch. ``STORAGE PLAIN`` keeps the 4 KiB value in the row, which
fits a page, uncompressed: measured, the batch hook's sketch writes take half the time
(docs/benchmarks.md). Rows already stored move in when next written. SQLite has no
such setting (nothing to do).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE event_day_sketches ALTER COLUMN registers SET STORAGE PLAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE event_day_sketches ALTER COLUMN registers SET STORAGE EXTENDED")
