"""Profiles and identity: data schema, rejected merges, search and token indexes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schema_paths",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(16), primary_key=True),  # trait | event
        sa.Column("event_name", sa.String(255), primary_key=True),  # '' for traits
        sa.Column("path", sa.String(512), primary_key=True),
        sa.Column("type", sa.String(16), primary_key=True),
        sa.Column("first_seen_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "merge_rejections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("anonymous_id", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("other_profile_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("log_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_merge_rejections_profile", "merge_rejections", ["profile_id"])
    op.create_index("ix_merge_rejections_other", "merge_rejections", ["other_profile_id"])
    op.create_index("ix_profiles_project_created", "profiles", ["project_id", "created_at", "id"])
    op.create_index("ix_profiles_project_email", "profiles", ["project_id", "email"])
    op.create_index("ix_profiles_project_phone", "profiles", ["project_id", "phone"])
    op.create_index("ix_devices_project_token", "devices", ["project_id", "token"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("context", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("context")
    op.drop_index("ix_devices_project_token", "devices")
    op.drop_index("ix_profiles_project_phone", "profiles")
    op.drop_index("ix_profiles_project_email", "profiles")
    op.drop_index("ix_profiles_project_created", "profiles")
    op.drop_table("merge_rejections")
    op.drop_table("schema_paths")
