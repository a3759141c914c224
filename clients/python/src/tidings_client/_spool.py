"""A durable local spool of events not yet acknowledged by the server (SQLite, stdlib).

An event is committed to the spool before ``track`` returns and deleted only after the server
answered 2xx for it (or refused it for good). Rows survive a crash or ``SIGKILL`` of the host
and are sent by the next client that opens the same file.

Several processes may share one spool (a forked worker, a restarted host): a sender *leases*
the rows it is sending (``owner``, ``lease_until``). A lease ends when it expires or, on the
same machine, as soon as its owner process is gone, so a restarted host re-sends right away.
Each event keeps its ``message_id``, so a row sent twice (a lease taken over while its first
sender was still trying) is still stored once by the server.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Item", "Spool", "SpoolFullError"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    queued_at REAL NOT NULL,
    owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS events_owner ON events (owner);
"""

# Owner tokens of spools open in this process, to tell our own live leases from those of a
# dead process that had the same pid (pid 1 in a restarted container, say).
_LIVE_OWNERS: set[str] = set()
_HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class Item:
    """One queued event: ``seq`` orders items, ``body`` is the event's JSON."""

    seq: int
    message_id: str
    body: bytes


class SpoolFullError(Exception):
    """The spool holds ``max_events`` rows already."""


def _owner_token() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _owner_is_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False  # another machine's lease: wait for it to expire
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, but someone else's
        return False
    return False


class Spool:
    """Rows of events on disk. Thread-safe; one SQLite connection per process."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_events: int = 1_000_000,
        lease_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self.max_events = max_events
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._owner = _owner_token()
        self._conn: sqlite3.Connection | None = None
        self._conn = self._connect()
        _LIVE_OWNERS.add(self._owner)
        self._count = self._count_rows()

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives a crash of the process (not of the OS) without an
        # fsync per event.
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(
                f"spool {self.path} has schema {version}, expected {_SCHEMA_VERSION}"
            )
        return conn

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the spool is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (one WAL commit), taken with the write lock at once.

        The connection is in autocommit mode, so without this every statement, and every row
        of an ``executemany``, would be a commit of its own. Call with ``self._lock`` held.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (disk full, say)
                db.execute("ROLLBACK")
            raise

    def _count_rows(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    @property
    def owner(self) -> str:
        """This spool's lease token: ``host:pid:random``."""
        return self._owner

    def approximate_count(self) -> int:
        """Rows in the spool as this process last saw it (other processes change it too)."""
        return self._count

    def count(self) -> int:
        """Rows in the spool now."""
        self._count = self._count_rows()
        return self._count

    def last_seq(self) -> int:
        """The id of the newest row, 0 when empty."""
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def append(self, message_id: str, body: bytes) -> Item:
        """Commit one event; it is durable when this returns."""
        with self._lock:
            if self._count >= self.max_events:
                self._count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
                if self._count >= self.max_events:
                    raise SpoolFullError(f"the spool holds {self._count} events already")
            cursor = self._db.execute(
                "INSERT INTO events (message_id, body, queued_at) VALUES (?, ?, ?)",
                (message_id, body, self._clock()),
            )
            self._count += 1
            return Item(int(cursor.lastrowid or 0), message_id, body)

    def take(self, max_items: int, max_bytes: int) -> list[Item]:
        """Lease the oldest free rows, at most ``max_items`` and ``max_bytes`` of bodies."""
        now = self._clock()
        with self._lock, self._transaction() as db:
            self._free_dead_leases(now)
            rows = db.execute(
                "SELECT id, message_id, body FROM events"
                " WHERE owner IS NULL OR owner = ? OR lease_until < ?"
                " ORDER BY id LIMIT ?",
                (self._owner, now, max_items),
            ).fetchall()
            items: list[Item] = []
            size = 0
            for row_id, message_id, body in rows:
                if items and size + len(body) > max_bytes:
                    break
                items.append(Item(int(row_id), str(message_id), bytes(body)))
                size += len(body)
            self._lease(items, now)
        return items

    def _free_dead_leases(self, now: float) -> None:
        owners = self._db.execute(
            "SELECT DISTINCT owner FROM events WHERE owner IS NOT NULL AND owner != ?"
            " AND lease_until >= ?",
            (self._owner, now),
        ).fetchall()
        for (owner,) in owners:
            if _owner_is_gone(str(owner)):
                self._db.execute(
                    "UPDATE events SET owner = NULL, lease_until = NULL WHERE owner = ?", (owner,)
                )

    def _lease(self, items: Sequence[Item], now: float) -> None:
        """Lease ``items`` to this spool; call inside ``_transaction``."""
        self._db.executemany(
            "UPDATE events SET owner = ?, lease_until = ? WHERE id = ?",
            [(self._owner, now + self.lease_seconds, item.seq) for item in items],
        )

    def renew(self, items: Sequence[Item]) -> None:
        """Extend the lease of rows being retried (in one transaction)."""
        if not items:
            return
        with self._lock, self._transaction():
            self._lease(items, self._clock())

    def remove(self, items: Iterable[Item]) -> None:
        """Delete rows the server acknowledged (or refused for good), in one transaction."""
        ids = [(item.seq,) for item in items]
        if not ids:
            return
        with self._lock:
            with self._transaction() as db:
                deleted = db.executemany("DELETE FROM events WHERE id = ?", ids).rowcount
            # Rows another process already deleted (a lease taken over) are not counted twice.
            self._count = max(0, self._count - max(0, deleted))

    def release(self, items: Iterable[Item]) -> None:
        """Give leased rows back, for this or another process to send later."""
        ids = [(item.seq, self._owner) for item in items]
        if not ids:
            return
        with self._lock, self._transaction() as db:
            db.executemany(
                "UPDATE events SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                ids,
            )

    def settled(self, seq: int) -> bool:
        """True when no row up to ``seq`` is left, i.e. all of them were delivered or refused."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM events WHERE id <= ? LIMIT 1", (seq,)).fetchone()
        return row is None

    def close(self) -> None:
        """Release this process's leases and close the file."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute(
                    "UPDATE events SET owner = NULL, lease_until = NULL WHERE owner = ?",
                    (self._owner,),
                )
            finally:
                self._conn.close()
                self._conn = None
                _LIVE_OWNERS.discard(self._owner)

    # -- fork: SQLite handles must never cross fork(), so close around it -----------------

    def _before_fork(self) -> None:
        self._lock.acquire()
        if self._conn is not None:
            self._conn.close()

    def _after_fork_in_parent(self) -> None:
        try:
            if self._conn is not None:
                self._conn = self._connect()
        finally:
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        _LIVE_OWNERS.discard(self._owner)  # the parent's lease token, alive in the parent
        self._owner = _owner_token()
        if self._conn is not None:
            self._conn = self._connect()
            _LIVE_OWNERS.add(self._owner)
