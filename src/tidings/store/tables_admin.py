"""The tables of the admin area, on the shared metadata of store/tables.py
(which imports this module, so that migrations and their tests see one schema).

- ``admin_accounts``: people who sign in to the admin UI, with argon2 password hashes.
  ``owner`` accounts (made by ``tidings admin create``) are admins of every project.
- ``admin_roles``: an account's role in one project (support < editor < publisher <
  admin), as for API keys.
- ``admin_sessions``: signed-in browsers. The cookie carries a random token; only its
  SHA-256 is stored, with the session's CSRF token and its expiry.
- ``admin_login_failures``: failed sign-ins by account (``email:…``) and by client
  address (``ip:…``), so that every API node counts the same attempts.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Micros, identities, metadata, profiles

__all__ = ["admin_accounts", "admin_login_failures", "admin_roles", "admin_sessions"]

# The users search (store/users.py: the admin's Users page and GET /users?q=) matches
# prefixes with LIKE 'q%' on PostgreSQL, which a B-tree serves only with text_pattern_ops
# (unless the database's collation is "C"): without these, a search read every identity
# and profile of the project (about 1 s at a million profiles). SQLite's search uses
# ranges on the existing indexes.
_PG = {"dialects": ("postgresql",)}
sa.Index(
    "ix_identities_project_value_prefix",
    identities.c.project_id,
    identities.c.value,
    postgresql_ops={"value": "text_pattern_ops"},
    info=_PG,
).ddl_if(dialect="postgresql")
sa.Index(
    "ix_profiles_project_lower_email_prefix",
    profiles.c.project_id,
    sa.func.lower(profiles.c.email).label("lower_email"),
    postgresql_ops={"lower_email": "text_pattern_ops"},
    info=_PG,
).ddl_if(dialect="postgresql")
sa.Index(
    "ix_profiles_project_phone_prefix",
    profiles.c.project_id,
    profiles.c.phone,
    postgresql_ops={"phone": "text_pattern_ops"},
    info=_PG,
).ddl_if(dialect="postgresql")

admin_accounts = sa.Table(
    "admin_accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),  # lower case
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("owner", sa.Boolean, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("disabled_at", Micros, nullable=True),
)

admin_roles = sa.Table(
    "admin_roles",
    metadata,
    sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("project_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("role", sa.String(20), nullable=False),
)

admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("expires_at", Micros, nullable=False),
    sa.Index("ix_admin_sessions_account", "account_id"),
    sa.Index("ix_admin_sessions_expires", "expires_at"),
)

admin_login_failures = sa.Table(
    "admin_login_failures",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("subject", sa.String(400), nullable=False),  # "email:…" or "ip:…"
    sa.Column("at", Micros, nullable=False),
    sa.Index("ix_admin_login_failures_subject", "subject", "at"),
    sa.Index("ix_admin_login_failures_at", "at"),
)
