"""One table of installation secrets: ``instance_secrets`` (0014) repeated
``installation_secrets`` (0013). Its rows, if any, move to ``installation_secrets``
(where that has no row of the same name), and it is dropped.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO installation_secrets (name, value, created_at) "
        "SELECT name, value, created_at FROM instance_secrets "
        "WHERE name NOT IN (SELECT name FROM installation_secrets)"
    )
    op.drop_table("instance_secrets")


def downgrade() -> None:
    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
