"""Lists (segments): definitions, members and the record of entering and leaving.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lists",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("rule", Json, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("users_count", sa.BigInteger, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_lists_project", "lists", ["project_id", "id"])
    op.create_table(
        "list_members",
        sa.Column("list_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("added_at", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_list_members_list_added", "list_members", ["list_id", "added_at", "profile_id"]
    )
    op.create_index("ix_list_members_profile", "list_members", ["profile_id"])
    op.create_table(
        "list_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("list_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("list_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_list_changes_list", "list_changes", ["list_id", "created_at"])
    op.create_index(
        "ix_list_changes_profile", "list_changes", ["project_id", "profile_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_list_changes_profile", "list_changes")
    op.drop_index("ix_list_changes_list", "list_changes")
    op.drop_table("list_changes")
    op.drop_index("ix_list_members_profile", "list_members")
    op.drop_index("ix_list_members_list_added", "list_members")
    op.drop_table("list_members")
    op.drop_index("ix_lists_project", "lists")
    op.drop_table("lists")
