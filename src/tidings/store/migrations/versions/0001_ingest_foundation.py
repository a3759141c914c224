"""Ingest foundation: projects, keys, ingest log, idempotency, profiles, events, devices.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("locale", sa.String(255), nullable=True),
        sa.Column("timezone", sa.String(50), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("scope", sa.String(10), nullable=False),
        sa.Column("role", sa.String(20), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "ingest_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("accepted_at", sa.BigInteger, nullable=False),
        # Positions must never be reused after a trim, or a consumer would skip new entries.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ingest_log_partition_seq", "ingest_log", ["partition", "seq"])
    op.create_table(
        "log_positions",
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "profiles",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("timezone", sa.String(50), nullable=True),
        sa.Column("locale", sa.String(255), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_profiles_project_external", "profiles", ["project_id", "external_id"])
    op.create_table(
        "identities",
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(255), primary_key=True),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_identities_profile", "identities", ["profile_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("anonymous_id", sa.String(255), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("project_id", "message_id", name="uq_events_project_message"),
    )
    op.create_index(
        "ix_events_profile_time", "events", ["project_id", "profile_id", "created_at", "id"]
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("token", sa.String(4096), nullable=True),
        sa.Column("os", sa.String(64), nullable=True),
        sa.Column("os_version", sa.String(64), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("app_build", sa.String(64), nullable=True),
        sa.Column("app_version", sa.String(64), nullable=True),
        sa.Column("sdk_version", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("project_id", "device_id", name="uq_devices_project_device"),
    )
    op.create_index("ix_devices_profile", "devices", ["profile_id"])


def downgrade() -> None:
    for table in (
        "devices",
        "events",
        "identities",
        "profiles",
        "idempotency_keys",
        "log_positions",
        "ingest_log",
        "api_keys",
        "projects",
    ):
        op.drop_table(table)
