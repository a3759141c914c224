"""The admin UI: accounts, per-project roles, sessions and failed sign-ins; on PostgreSQL,
indexes for prefix searches of users (``text_pattern_ops``).

See ``store/tables_admin.py`` for what each table holds.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# PostgreSQL: prefix searches of users (LIKE 'q%') by identity, email and phone.
_PREFIX_INDEXES = (
    ("ix_identities_project_value_prefix", "identities", "value"),
    ("ix_profiles_project_lower_email_prefix", "profiles", "lower(email)"),
    ("ix_profiles_project_phone_prefix", "profiles", "phone"),
)


def upgrade() -> None:
    op.create_table(
        "admin_accounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("owner", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("disabled_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "admin_roles",
        sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("role", sa.String(20), nullable=False),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_admin_sessions_account", "admin_sessions", ["account_id"])
    op.create_index("ix_admin_sessions_expires", "admin_sessions", ["expires_at"])
    op.create_table(
        "admin_login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_admin_login_failures_subject", "admin_login_failures", ["subject", "at"])
    op.create_index("ix_admin_login_failures_at", "admin_login_failures", ["at"])
    if op.get_bind().dialect.name == "postgresql":
        for name, table, column in _PREFIX_INDEXES:
            op.create_index(name, table, ["project_id", sa.text(f"{column} text_pattern_ops")])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, table, _ in reversed(_PREFIX_INDEXES):
            op.drop_index(name, table_name=table)
    op.drop_index("ix_admin_login_failures_at", table_name="admin_login_failures")
    op.drop_index("ix_admin_login_failures_subject", table_name="admin_login_failures")
    op.drop_table("admin_login_failures")
    op.drop_index("ix_admin_sessions_expires", table_name="admin_sessions")
    op.drop_index("ix_admin_sessions_account", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admin_roles")
    op.drop_table("admin_accounts")
