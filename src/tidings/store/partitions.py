"""Monthly partitions of the ``events`` table on PostgreSQL.

``events`` is ``PARTITION BY RANGE (created_at)``: one partition per calendar month (UTC),
named ``events_YYYYMM``, and ``events_default`` for everything else (events arrive with
any client-supplied ``created_at``: years old, or ahead of the clock). The migration
creates the partitions for the current month and the next two; the worker's maintenance
keeps them that far ahead (``EventPartitions.maintain``), so that new events land in
their month's partition and retention can drop whole months.

PostgreSQL refuses to create a partition for a range that rows of the default partition
fall into. ``create_partition`` therefore builds the new table beside the partitioned one,
moves those rows into it and attaches it, in one transaction holding the default
partition's lock (writers of other months are not blocked: attaching takes only a
``SHARE UPDATE EXCLUSIVE`` lock on ``events``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from tidings.store.tables import events

__all__ = [
    "DEFAULT_PARTITION",
    "MONTHS_AHEAD",
    "EventPartitions",
    "Partition",
    "create_partition",
    "drop_partitions_before",
    "ensure_partitions",
    "list_partitions",
    "month_bounds",
    "month_of",
    "partition_name",
    "try_lock",
]

logger = logging.getLogger(__name__)

DEFAULT_PARTITION = "events_default"
MONTHS_AHEAD = 2
# pg_advisory_xact_lock key: one worker at a time changes the partitions.
_LOCK_KEY = 0x7469_6465_7670  # "tidevp"
_BOUND = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


@dataclass(frozen=True, order=True)
class Partition:
    """A partition of ``events``: ``[lower, upper)`` in microseconds, None for the default."""

    lower: int | None
    upper: int | None
    name: str

    @property
    def is_default(self) -> bool:
        return self.lower is None


def month_of(micros: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.year, moment.month


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """The month's range in microseconds since the epoch (UTC), upper bound excluded."""
    next_year, next_month = _add_months(year, month, 1)
    lower = datetime(year, month, 1, tzinfo=UTC)
    upper = datetime(next_year, next_month, 1, tzinfo=UTC)
    return int(lower.timestamp()) * 1_000_000, int(upper.timestamp()) * 1_000_000


def partition_name(year: int, month: int) -> str:
    return f"events_{year:04d}{month:02d}"


def list_partitions(conn: Connection) -> list[Partition]:
    """The partitions of ``events``, the default one first, then by range."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match is None:  # "DEFAULT"
            found.append(Partition(None, None, name))
        else:
            found.append(Partition(int(match.group(1)), int(match.group(2)), name))
    return sorted(found, key=lambda p: (p.lower is not None, p.lower or 0))


def create_partition(conn: Connection, year: int, month: int) -> int:
    """Create the month's partition; returns how many rows it took over from the default
    partition. Run it inside a transaction (its steps must commit together)."""
    name = partition_name(year, month)
    lower, upper = month_bounds(year, month)
    conn.exec_driver_sql(
        f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    default = any(p.is_default for p in list_partitions(conn))
    moved = 0
    if default:
        # No writer may put a row of this month into the default partition between the
        # move and the attach (the attach would fail): hold its lock until the commit.
        conn.exec_driver_sql(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        columns = ", ".join(c.name for c in events.columns)
        moved = conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
            f"WHERE created_at >= {lower} AND created_at < {upper} RETURNING {columns}) "
            f"INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
        ).rowcount
    # Lets the attach skip scanning the new table; dropped once attached.
    conn.exec_driver_sql(
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_range "
        f"CHECK (created_at >= {lower} AND created_at < {upper})"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})"
    )
    conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
    if moved:
        logger.info("partition %s created with %d events from %s", name, moved, DEFAULT_PARTITION)
    return max(moved, 0)


def try_lock(conn: Connection) -> bool:
    """Take the transaction's lock on changing the partitions; False if another has it."""
    return bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})").scalar())


def ensure_partitions(conn: Connection, now: int, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the partitions missing for the month of ``now`` and the ``months_ahead``
    after it; returns their names. Nothing happens if another worker holds the lock."""
    if not try_lock(conn):
        return []
    conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
    existing = {p.name for p in list_partitions(conn)}
    year, month = month_of(now)
    created = []
    for n in range(months_ahead + 1):
        y, m = _add_months(year, month, n)
        if partition_name(y, m) not in existing:
            create_partition(conn, y, m)
            created.append(partition_name(y, m))
    return created


def drop_partitions_before(conn: Connection, cutoff: int) -> list[str]:
    """Drop the monthly partitions whose whole range is older than ``cutoff``; returns their
    names. Nothing happens if another worker holds the lock."""
    if not try_lock(conn):
        return []
    conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
    dropped = []
    for partition in list_partitions(conn):
        if partition.upper is not None and partition.upper <= cutoff:
            conn.exec_driver_sql(f"DROP TABLE {partition.name}")
            dropped.append(partition.name)
    return dropped


class EventPartitions:
    """Keeps ``events`` partitions ahead of the clock; cheap to call often (it looks at
    most once per ``every`` seconds, and again a minute after a failure)."""

    def __init__(
        self,
        writer: Engine,
        *,
        months_ahead: int = MONTHS_AHEAD,
        every: float = 3600.0,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.writer = writer
        self.months_ahead = months_ahead
        self.every = every
        self.clock = clock
        self._next = 0.0

    def maintain(self, *, force: bool = False) -> list[str]:
        if not force and time.monotonic() < self._next:
            return []
        self._next = time.monotonic() + 60.0
        with self.writer.begin() as conn:
            created = ensure_partitions(conn, self.clock(), self.months_ahead)
        self._next = time.monotonic() + self.every
        if created:
            logger.info("events partitions created: %s", ", ".join(created))
        return created
