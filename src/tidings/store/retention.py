"""Event retention (``TIDINGS_EVENT_RETENTION_DAYS``) and the worker's upkeep of events.

Events whose ``created_at`` is older than now - retention are deleted, and so are the
message ids of ``event_message_ids`` by the same cutoff: de-duplication covers the
retention window, and a retry of an event older than that is stored again (and deleted
by the next pass, since its ``created_at`` is already past the cutoff).

- PostgreSQL: monthly partitions entirely older than the cutoff are dropped (no row by
  row delete, no bloat); what remains older than the cutoff (the month that straddles it,
  and ``events_default``) is deleted in chunks.
- SQLite: chunked ``DELETE``s, each in its own short transaction, so that the ingest
  writers (who share the one write lock) never wait for more than one chunk.

The event rollups (store/rollups.py) follow: once a pass has deleted events, the rollups
of days before the cutoff's UTC day are deleted and that day's are computed again from
the events left (one transaction, after the events' last chunk).

A pass runs at most every ``every`` seconds and spends at most about ``budget`` seconds
per call (the worker calls it between batches); an unfinished pass continues on the
next call. With several workers, one at a time works (an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.store import rollups
from tidings.store.database import Writer
from tidings.store.partitions import EventPartitions, drop_partitions_before

__all__ = ["EventRetention", "EventUpkeep", "Pruned"]

logger = logging.getLogger(__name__)

DAY = 86_400_000_000  # microseconds
_LOCK_KEY = 0x7469_6465_7672  # "tidevr": one worker at a time deletes

_DELETE = {
    ("sqlite", "events"): "DELETE FROM events WHERE rowid IN "
    "(SELECT rowid FROM events WHERE created_at < :cutoff LIMIT :n)",
    ("sqlite", "event_message_ids"): "DELETE FROM event_message_ids WHERE rowid IN "
    "(SELECT rowid FROM event_message_ids WHERE created_at < :cutoff LIMIT :n)",
    # The outer ``created_at`` condition lets PostgreSQL prune the partitions to visit.
    ("postgresql", "events"): "DELETE FROM events WHERE created_at < :cutoff "
    "AND (id, created_at) IN "
    "(SELECT id, created_at FROM events WHERE created_at < :cutoff LIMIT :n)",
    ("postgresql", "event_message_ids"): "DELETE FROM event_message_ids "
    "WHERE (project_id, message_id) IN (SELECT project_id, message_id "
    "FROM event_message_ids WHERE created_at < :cutoff LIMIT :n)",
}


def _now() -> int:
    return time.time_ns() // 1000


@dataclass
class Pruned:
    """What one call of ``EventRetention.run`` removed."""

    events: int = 0
    message_ids: int = 0
    partitions: list[str] = field(default_factory=list)
    finished: bool = True  # False: the pass continues on the next call


class EventRetention:
    def __init__(
        self,
        writer: Writer,
        days: int,
        *,
        chunk: int = 5000,
        budget: float = 0.25,
        every: float = 600.0,
        clock: Callable[[], int] = _now,
    ) -> None:
        self.writer = writer
        self.days = days
        self.chunk = chunk
        self.budget = budget
        self.every = every
        self.clock = clock
        self.dialect = writer.dialect.name
        self._next = 0.0
        self._rollups_stale = False  # events were deleted; the rollups not yet

    def cutoff(self) -> int:
        return self.clock() - self.days * DAY

    def run(self, *, force: bool = False) -> Pruned:
        """Delete what is older than the retention window, for about ``budget`` seconds
        at most; ``force`` ignores the schedule."""
        pruned = Pruned()
        if self.days <= 0 or (not force and time.monotonic() < self._next):
            return pruned
        self._next = time.monotonic() + 60.0  # if this fails, try again in a minute
        cutoff = self.cutoff()
        deadline = time.monotonic() + self.budget
        if self.dialect == "postgresql":
            with self.writer.begin() as conn:
                pruned.partitions = drop_partitions_before(conn, cutoff)
        for table in ("events", "event_message_ids"):
            while True:
                deleted = self._delete_chunk(table, cutoff)
                if deleted is None:  # another worker is at it
                    break
                if table == "events":
                    pruned.events += deleted
                else:
                    pruned.message_ids += deleted
                if deleted < self.chunk:
                    break
                if time.monotonic() >= deadline:
                    pruned.finished = False
                    break
            if not pruned.finished:
                break
        if pruned.events or pruned.partitions:
            self._rollups_stale = True
        if pruned.finished and self._rollups_stale:
            self._trim_rollups(cutoff)
        self._next = time.monotonic() + (self.every if pruned.finished else 0.0)
        if pruned.events or pruned.message_ids or pruned.partitions:
            logger.info(
                "retention: %d events, %d message ids, partitions %s deleted (before %d)%s",
                pruned.events,
                pruned.message_ids,
                pruned.partitions or "none",
                cutoff,
                "" if pruned.finished else "; continuing",
            )
        return pruned

    def _trim_rollups(self, cutoff: int) -> None:
        day = rollups.day_of(cutoff)
        with self.writer.begin() as conn:
            if self.dialect == "postgresql" and not _try_lock(conn):
                return  # another worker is at it; this one tries again next pass
            rollups.trim_before(conn, day)
            rollups.rebuild_day(conn, day)
        self._rollups_stale = False

    def _delete_chunk(self, table: str, cutoff: int) -> int | None:
        statement = sa.text(_DELETE[(self.dialect, table)])
        with self.writer.begin() as conn:
            if self.dialect == "postgresql" and not _try_lock(conn):
                return None
            result = conn.execute(statement, {"cutoff": cutoff, "n": self.chunk})
            return max(result.rowcount, 0)


def _try_lock(conn: Connection) -> bool:
    return bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})").scalar())


class EventUpkeep:
    """The worker's maintenance of events: partitions kept ahead (PostgreSQL) and
    retention. Each step is rate-limited and bounded, and a failure is logged and retried
    later rather than holding up the worker."""

    def __init__(self, writer: Writer, retention_days: int) -> None:
        self.partitions = (
            EventPartitions(writer)
            if isinstance(writer, Engine) and writer.dialect.name == "postgresql"
            else None
        )
        self.retention = EventRetention(writer, retention_days)

    def run(self) -> None:
        if self.partitions is not None:
            try:
                self.partitions.maintain()
            except Exception:
                logger.warning("creating events partitions failed; retrying later", exc_info=True)
        try:
            self.retention.run()
        except Exception:
            logger.warning("event retention failed; retrying later", exc_info=True)
