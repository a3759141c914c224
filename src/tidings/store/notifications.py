"""In-app notifications: stored by the delivery worker, listed and marked read by the SDKs.

``create`` runs in the delivery's own transaction (the connection it is given), so a
notification exists exactly when its send is recorded as sent; a second ``create`` for
the same ``send_id`` changes nothing and answers the first one's id. Reads and the
owner-only ``mark_read`` use the store's own engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.store.database import Writer
from tidings.store.tables_notifications import notifications

__all__ = ["DEFAULT_TTL", "Notification", "NotificationStore"]

DEFAULT_TTL = 30 * 86_400_000_000  # microseconds a notification stays listed unread
PURGE_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    project_id: int
    profile_id: str
    campaign_id: int | None
    content_type: str
    content: dict[str, Any]
    read_at: int | None
    expires_at: int | None
    created_at: int
    updated_at: int


def _row(row: Any) -> Notification:
    return Notification(
        id=row.id,
        project_id=row.project_id,
        profile_id=row.profile_id,
        campaign_id=row.campaign_id,
        content_type=row.content_type,
        content=dict(row.content or {}),
        read_at=row.read_at,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class NotificationStore:
    """``ttl``: microseconds from creation until a notification expires (None: never),
    unless its content names its own ``expires_at`` (microseconds)."""

    def __init__(self, writer: Writer, reader: Engine, *, ttl: int | None = DEFAULT_TTL) -> None:
        self.writer = writer
        self.reader = reader
        self.ttl = ttl
        self._insert = postgresql.insert if writer.dialect.name == "postgresql" else sqlite.insert

    # -- the delivery worker's write, in its transaction -------------------------------------

    def create(
        self,
        conn: Connection,
        *,
        project_id: int,
        profile_id: str,
        campaign_id: int,
        send_id: int,
        content: Mapping[str, Any],
        now: int,
    ) -> int:
        """Store the notification of one in-app send; its id (the same for a repeat)."""
        body = {k: v for k, v in content.items() if k != "expires_at"}
        expires_at = content.get("expires_at")
        if not isinstance(expires_at, int) or isinstance(expires_at, bool):
            expires_at = None if self.ttl is None else now + self.ttl
        kind = body.get("type")
        inserted = conn.execute(
            self._insert(notifications)
            .values(
                project_id=project_id,
                profile_id=profile_id,
                campaign_id=campaign_id,
                send_id=send_id,
                content_type=kind if isinstance(kind, str) else "banner",
                content=body,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["send_id"])
            .returning(notifications.c.id)
        ).scalar_one_or_none()
        if inserted is not None:
            return int(inserted)
        return int(
            conn.execute(
                sa.select(notifications.c.id).where(notifications.c.send_id == send_id)
            ).scalar_one()
        )

    # -- the SDKs' reads and writes -------------------------------------------------------------

    def unread(
        self, project_id: int, profile_id: str, now: int, *, before: int | None, limit: int
    ) -> list[Notification]:
        """Unread, unexpired notifications of one user, newest first, ids below ``before``."""
        query = (
            sa.select(notifications)
            .where(
                notifications.c.project_id == project_id,
                notifications.c.profile_id == profile_id,
                notifications.c.read_at.is_(None),
                sa.or_(notifications.c.expires_at.is_(None), notifications.c.expires_at > now),
            )
            .order_by(notifications.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(notifications.c.id < before)
        with self.reader.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def mark_read(
        self, project_id: int, profile_ids: Iterable[str], notification_id: int, now: int
    ) -> Notification | None:
        """Mark one notification read, only if it belongs to one of ``profile_ids`` in this
        project; the notification as it is now, or None (not found, or not theirs). Marking
        a read one again keeps its first ``read_at``."""
        owners = list(profile_ids)
        if not owners:
            return None
        mine = sa.and_(
            notifications.c.id == notification_id,
            notifications.c.project_id == project_id,
            notifications.c.profile_id.in_(owners),
        )
        with self.writer.begin() as conn:
            conn.execute(
                sa.update(notifications)
                .where(mine, notifications.c.read_at.is_(None))
                .values(read_at=now, updated_at=now)
            )
            row = conn.execute(sa.select(notifications).where(mine)).first()
        return None if row is None else _row(row)

    # -- upkeep ----------------------------------------------------------------------------------

    def purge_expired(self, now: int, *, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` notifications expired before ``now``; how many."""
        with self.writer.begin() as conn:
            ids = list(
                conn.execute(
                    sa.select(notifications.c.id)
                    .where(notifications.c.expires_at <= now)
                    .order_by(notifications.c.expires_at)
                    .limit(limit)
                ).scalars()
            )
            if ids:
                conn.execute(sa.delete(notifications).where(notifications.c.id.in_(ids)))
        return len(ids)

    @staticmethod
    def follow_profiles(
        conn: Connection,
        merges: Iterable[tuple[int, str, str]],
        erased: Iterable[tuple[int, str]],
    ) -> None:
        """In a batch's transaction: a merged profile's notifications go to the survivor,
        an erased profile's are deleted (idempotent, as a batch hook must be)."""
        for project_id, absorbed, survivor in merges:
            conn.execute(
                sa.update(notifications)
                .where(
                    notifications.c.project_id == project_id,
                    notifications.c.profile_id == absorbed,
                )
                .values(profile_id=survivor)
            )
        for project_id, profile_id in erased:
            conn.execute(
                sa.delete(notifications).where(
                    notifications.c.project_id == project_id,
                    notifications.c.profile_id == profile_id,
                )
            )
