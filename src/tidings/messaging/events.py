"""Facts about users that messaging records as events, through the ingest log.

A send's outcome (``email_sent``, ``text_failed``, …) and a subscription change
(``subscribed``, ``unsubscribed``) are written to ``pending_events`` in the transaction
that makes the change, then appended to the ingest log and deleted (``EventOutbox.flush``).
A crash between the two leaves the rows, and the next flush appends them again: each
carries a message id derived from the change (``send_<id>_sent``), so the log's
de-duplication gives the event exactly once. Events go through the pipeline like any
other: segments and journeys see them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.store.database import Writer
from tidings.store.tables import identities, profiles
from tidings.store.tables_messaging import pending_events

__all__ = ["Append", "EventOutbox", "identities_of", "identity_of"]

logger = logging.getLogger(__name__)

Append = Callable[[list[AppendRequest]], Any]  # IngestLog.append


def identities_of(
    conn: Connection, project_id: int, profile_ids: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """The identity to name each profile by in an event: ``("external_id", value)``, or
    ``("anonymous_id", value)`` for a profile without an external id."""
    wanted = sorted(set(profile_ids))
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for profile_id, external_id in conn.execute(
            sa.select(profiles.c.id, profiles.c.external_id).where(profiles.c.id.in_(chunk))
        ):
            if external_id:
                found[profile_id] = ("external_id", external_id)
        missing = [p for p in chunk if p not in found]
        if missing:
            for profile_id, value in conn.execute(
                sa.select(identities.c.profile_id, sa.func.min(identities.c.value))
                .where(
                    identities.c.project_id == project_id,
                    identities.c.kind == "anonymous",
                    identities.c.profile_id.in_(missing),
                )
                .group_by(identities.c.profile_id)
            ):
                found[profile_id] = ("anonymous_id", value)
    return found


def identity_of(reader: Engine, project_id: int, profile_id: str) -> tuple[str, str] | None:
    """``identities_of`` for one profile, on a connection of its own; None when it has
    no identity left (erased, or merged into another)."""
    with reader.connect() as conn:
        return identities_of(conn, project_id, [profile_id]).get(profile_id)


def event_payload(
    name: str,
    identity: tuple[str, str],
    data: Mapping[str, Any],
    message_id: str,
    created_at: int,
) -> dict[str, Any]:
    return {
        "name": name,
        identity[0]: identity[1],
        "data": dict(data),
        "message_id": message_id,
        "created_at": created_at,
    }


class EventOutbox:
    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        append: Append | None,
        partitions: int,
        *,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.append = append
        self.partitions = partitions
        self.on_append = on_append

    @staticmethod
    def add(conn: Connection, project_id: int, payloads: list[dict[str, Any]], now: int) -> None:
        """Record events to append, in the caller's transaction."""
        if payloads:
            conn.execute(
                sa.insert(pending_events),
                [{"project_id": project_id, "payload": p, "created_at": now} for p in payloads],
            )

    def flush(self, limit: int = 2000) -> int:
        """Append waiting events to the ingest log, oldest first; how many went. Safe to
        run in several processes at once (a double append is de-duplicated)."""
        if self.append is None:
            return 0
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(
                    pending_events.c.id, pending_events.c.project_id, pending_events.c.payload
                )
                .order_by(pending_events.c.id)
                .limit(limit)
            ).all()
        if not rows:
            return 0
        entries = []
        for _, project_id, payload in rows:
            identity = payload.get("external_id") or payload.get("anonymous_id") or ""
            partition = partition_of(project_id, identity, self.partitions)
            entries.append(LogEntry(project_id, "event", partition, payload, payload["created_at"]))
        self.append([AppendRequest(entries)])
        ids = [row[0] for row in rows]
        with self.writer.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    sa.delete(pending_events).where(
                        pending_events.c.id.in_(ids[start : start + 500])
                    )
                )
        if self.on_append is not None:
            self.on_append()
        return len(rows)
