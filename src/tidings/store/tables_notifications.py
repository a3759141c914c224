"""The tables of in-app notifications and of tracking, on the shared metadata of
store/tables.py (which imports this module). Migration 0014 creates them.

- ``notifications``: one per in-app send (unique per ``send_id``), listed to its user
  until read or expired; it follows its profile through merges and goes with it on erasure
  (``tidings.messaging.notifications.NotificationsHook``).
- ``instance_secrets``: secrets this installation made for itself, such as the key that
  signs tracking and unsubscribe links when ``TIDINGS_SECRET_KEY`` is not set; in the
  database, so that every API node and worker signs and checks with the same key.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Json, Micros, metadata

__all__ = ["instance_secrets", "notifications"]

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("send_id", sa.BigInteger, nullable=True),
    sa.Column("content_type", sa.String(16), nullable=False),  # banner | alert | html
    sa.Column("content", Json, nullable=False),
    sa.Column("read_at", Micros, nullable=True),
    sa.Column("expires_at", Micros, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.UniqueConstraint("send_id", name="uq_notifications_send"),
    # A user's unread notifications, newest first (the SDKs' list).
    sa.Index("ix_notifications_profile", "project_id", "profile_id", "id"),
    sa.Index("ix_notifications_expires", "expires_at"),
)

instance_secrets = sa.Table(
    "instance_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)
