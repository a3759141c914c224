"""The tables of in-app notifications and of tracking, on the shared metadata of
store/tables.py (which imports this module). Migration 0014 creates them.

- ``notifications``: one per in-app send (unique per ``send_id``), listed to its user
  until read or expired; it follows its profile through merges and goes with it on erasure
  (``tidings.messaging.notifications.NotificationsHook``).

The secrets this installation makes for itself (the key that signs tracking links when
``TIDINGS_SECRET_KEY`` is not set) are in ``installation_secrets`` (store/tables_messaging.py).
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Json, Micros, metadata

__all__ = ["notifications"]

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
