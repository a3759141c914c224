"""Engines for SQLite and PostgreSQL, configured for durability and concurrency.

SQLite gets two engines: writers start with ``BEGIN IMMEDIATE`` (so two writers never
deadlock upgrading a read lock), readers with a plain deferred ``BEGIN`` so that reads
never wait for the write lock (WAL mode). Writers of one process also queue on a Python
lock: SQLite's own busy handler sleeps in steps of up to 100 ms, which under contention
between the group committer and the consumer turned into latency spikes and lost
throughput (measured: 2.3k vs 7.5k single-event requests/s).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

__all__ = ["Database", "SerialisedEngine", "open_database"]

_json_encode = msgspec.json.Encoder().encode


def _json_serializer(value: Any) -> str:
    return _json_encode(value).decode()


class SerialisedEngine:
    """An engine whose write transactions take turns: on a lock within the process, and
    on an advisory file lock beside the database across processes (``tidings worker``
    next to ``tidings serve``, the CLI), so that a waiting writer wakes at once."""

    def __init__(self, engine: Engine, lock_path: str | None = None) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.dialect = engine.dialect
        self.url = engine.url
        self._lock_path = lock_path
        self._lock_fd: int | None = None

    def _file_lock(self) -> int | None:
        if self._lock_path is None:
            return None
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_fd

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.lock:
            fd = self._file_lock()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with self.engine.begin() as conn:
                    yield conn
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def connect(self) -> Connection:
        return self.engine.connect()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


Writer = Engine | SerialisedEngine


@dataclass(frozen=True)
class Database:
    url: str
    writer: Writer  # on SQLite, a SerialisedEngine
    reader: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str, *, immediate: bool, synchronous: str) -> Engine:
    engine = sa.create_engine(
        url,
        json_serializer=_json_serializer,
        json_deserializer=msgspec.json.decode,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> Database:
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        lock_path = f"{database}.writer-lock" if database and database != ":memory:" else None
        writer = SerialisedEngine(
            _sqlite_engine(url, immediate=True, synchronous=sqlite_synchronous), lock_path
        )
        reader = _sqlite_engine(url, immediate=False, synchronous=sqlite_synchronous)
        return Database(url=url, writer=writer, reader=reader)
    engine = sa.create_engine(
        url,
        json_serializer=_json_serializer,
        json_deserializer=msgspec.json.decode,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
    )
    return Database(url=url, writer=engine, reader=engine)
