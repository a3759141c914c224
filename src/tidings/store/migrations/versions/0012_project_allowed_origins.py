"""The web origins a project's public key may be used from (CORS, docs/browser.md).

NULL (every existing project): any origin, as before.

Revision ID: 0012
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("projects", sa.Column("allowed_origins", json, nullable=True))


def downgrade() -> None:
    op.drop_column("projects", "allowed_origins")
