"""Which worker processes which log partitions.

A partition is applied by one worker at a time, in order. Workers hold partitions as
leases that end by themselves when the worker dies:

- SQLite: one worker for the whole log, holding an advisory file lock beside the
  database (``<db>.worker-lock``). A second worker waits, and takes over when the first
  one's process ends (the kernel drops the lock).
- PostgreSQL: session-level advisory locks, one per partition, held on a connection of
  their own. A dying worker's connection closes and its locks go with it. Each worker also
  holds a "member" lock, so that every worker can count the live ones and aim for its fair
  share: ``ceil(partitions / members)``. Workers release what they hold beyond their share
  and take free partitions up to it, so two workers split eight partitions four and four,
  and one takes all eight back when the other dies.

Leases say who *should* work; they do not fence a worker that lost its lease without
noticing (a stalled process, a dropped connection). The processor does that: each batch's
write transaction checks, under a row lock, that the partition's stored position is still
the one the batch started from (``BatchProcessor``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import random
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["AdvisoryLeases", "FileLease", "Leases", "fair_share", "open_leases"]

logger = logging.getLogger(__name__)

# Advisory lock namespaces (the first key of pg_advisory_lock(int, int)).
MEMBER_SPACE = 0x5444_0001
PARTITION_SPACE = 0x5444_0002


class Leases(Protocol):
    def rebalance(self) -> set[int]:
        """Move toward this worker's fair share; the partitions it holds afterwards."""
        ...

    def close(self) -> None:
        """Give every lease back."""
        ...


def fair_share(partitions: int, members: int) -> int:
    return math.ceil(partitions / max(1, members))


class FileLease:
    """Every partition, for whichever worker holds the file lock (SQLite)."""

    def __init__(self, path: str, partitions: int) -> None:
        self.path = path
        self.partitions = partitions
        self._fd: int | None = None

    def rebalance(self) -> set[int]:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return set()
            self._fd = fd
            logger.info("worker lease taken: this process applies the ingest log")
        return set(range(self.partitions))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class AdvisoryLeases:
    """Partition leases as PostgreSQL session advisory locks (see the module docstring)."""

    def __init__(self, engine: Engine, partitions: int) -> None:
        self.engine = engine
        self.partitions = partitions
        self.member = random.randrange(1, 2**31 - 1)
        self.held: set[int] = set()
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(
                sa.text("SELECT pg_advisory_lock(:space, :member)"),
                {"space": MEMBER_SPACE, "member": self.member},
            )
            self._conn = conn
        return self._conn

    def members(self, conn: Connection) -> int:
        return int(
            conn.execute(
                sa.text(
                    # pg_locks lists every database's locks; advisory locks are per
                    # database, and so are the workers that share one log.
                    "SELECT count(DISTINCT objid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :space AND objsubid = 2 AND granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"space": MEMBER_SPACE},
            ).scalar_one()
        )

    def rebalance(self) -> set[int]:
        try:
            conn = self._connection()
            share = fair_share(self.partitions, self.members(conn))
            for partition in sorted(self.held, reverse=True)[: max(0, len(self.held) - share)]:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:space, :partition)"),
                    {"space": PARTITION_SPACE, "partition": partition},
                )
                self.held.discard(partition)
                logger.info("released partition %d (fair share is %d)", partition, share)
            for partition in range(self.partitions):
                if len(self.held) >= share:
                    break
                if partition in self.held:
                    continue
                taken = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:space, :partition)"),
                    {"space": PARTITION_SPACE, "partition": partition},
                ).scalar_one()
                if taken:
                    self.held.add(partition)
                    logger.info("took partition %d", partition)
        except sa.exc.DBAPIError:
            # The lease connection is gone, and with it every lock: hold nothing until a
            # new connection takes leases again.
            logger.warning("lost the lease connection; dropping every partition", exc_info=True)
            self._drop_connection()
        return set(self.held)

    def _drop_connection(self) -> None:
        self.held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        self._drop_connection()


def open_leases(engine: Engine, database_path: str | None, partitions: int) -> Leases:
    if engine.dialect.name == "postgresql":
        return AdvisoryLeases(engine, partitions)
    if database_path is None:
        raise ValueError("a SQLite worker lease needs a database file")
    return FileLease(f"{database_path}.worker-lock", partitions)
