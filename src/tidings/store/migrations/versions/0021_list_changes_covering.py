"""Lists: the list growth of the reports reads its window from one index.

``ix_list_changes_list`` (list_id, created_at) becomes ``ix_list_changes_list_time``
(list_id, created_at, change, project_id): a list's enter/leave facts of a time window,
counted per day (``reporting.history.list_history``: the reports page, its list growth
chart, ``GET /lists/{id}/history``), are read from the index alone, without a visit to
each fact's row. It starts with the same two columns, so it serves every query the old
one served (the journeys' list entrances read by list and time), and replaces it rather
than adding a second index to every list change written.

See ``store/tables.py``. Building it reads ``list_changes`` once.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_list_changes_list_time",
        "list_changes",
        ["list_id", "created_at", "change", "project_id"],
    )
    op.drop_index("ix_list_changes_list", table_name="list_changes")


def downgrade() -> None:
    op.create_index("ix_list_changes_list", "list_changes", ["list_id", "created_at"])
    op.drop_index("ix_list_changes_list_time", table_name="list_changes")
