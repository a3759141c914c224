"""Keeps in-app notifications with their user as the ingest pipeline changes profiles.

``NotificationsHook`` is a batch hook (``tidings.pipeline.processor.BatchHook``): in each
batch's transaction, a merged profile's notifications move to the profile it merged into,
and an erased profile's are deleted. Both statements are idempotent, as a hook must be.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from tidings.store.notifications import NotificationStore

__all__ = ["NotificationsHook"]


class NotificationsHook:
    def apply(self, conn: Connection, facts: Any, now: int) -> None:
        if facts.merges or facts.erased:
            NotificationStore.follow_profiles(conn, facts.merges, facts.erased)
