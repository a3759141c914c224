"""In-app notifications, and the secrets an installation makes for itself.

- ``notifications``: one per in-app send (unique ``send_id``), listed to its user by the
  SDKs' ``GET /api/client/notifications`` until read or expired.
- ``instance_secrets``: e.g. the key that signs tracking and unsubscribe links when
  ``TIDINGS_SECRET_KEY`` is not set.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=True),
        sa.Column("send_id", sa.BigInteger, nullable=True),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("content", Json, nullable=False),
        sa.Column("read_at", sa.BigInteger, nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("send_id", name="uq_notifications_send"),
    )
    op.create_index("ix_notifications_profile", "notifications", ["project_id", "profile_id", "id"])
    op.create_index("ix_notifications_expires", "notifications", ["expires_at"])
    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instance_secrets")
    op.drop_index("ix_notifications_expires", "notifications")
    op.drop_index("ix_notifications_profile", "notifications")
    op.drop_table("notifications")
