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
import functools
import inspect
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tidings.domain import limits

__all__ = ["Database", "SerialisedEngine", "WriterLock", "open_database", "sqlite_file"]

logger = logging.getLogger(__name__)

_json_encode = msgspec.json.Encoder().encode


def _json_serializer(value: Any) -> str:
    return _json_encode(value).decode()


_json_decode = msgspec.json.decode
# A JSON string (skipped whole, escapes included) or one bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
TOO_DEEP = "<nested too deeply>"


def _json_deserializer(text: str | bytes) -> Any:
    """JSON columns → Python values, for every stored value, however deep.

    Input nested deeper than ``limits.MAX_DEPTH`` is refused at the API, but a value
    stored before that limit existed can be deeper than the parser's stack allows; then
    every part below that depth is read as the string ``"<nested too deeply>"`` instead
    of failing the read (and the profile, timeline or page that holds it)."""
    try:
        return _json_decode(text)
    except RecursionError:
        return _json_decode(_pruned(text if isinstance(text, str) else text.decode()))


def _pruned(text: str) -> str:
    parts: list[str] = []
    depth = 0
    start = 0  # where the text not yet copied starts
    cut: int | None = None  # where the part being dropped starts
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth == limits.MAX_DEPTH + 1 and cut is None:
                parts.append(text[start : match.start()])
                cut = match.start()
        elif token in ("]", "}"):
            depth -= 1
            if depth == limits.MAX_DEPTH and cut is not None:
                parts.append(_json_serializer(TOO_DEEP))
                start, cut = match.end(), None
    parts.append(text[start:])
    return "".join(parts)


class WriterLock:
    """One writer at a time: a lock within the process, and an advisory file lock beside
    the database across processes (``tidings worker`` next to ``tidings serve``, the CLI),
    so that a waiting writer wakes as soon as the lock is free."""

    def __init__(self, lock_path: str | None) -> None:
        self._lock = threading.Lock()
        self._path = lock_path
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._path is not None and self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fd = self._fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SerialisedEngine:
    """An engine whose write transactions take turns on a ``WriterLock``."""

    def __init__(self, engine: Engine, lock: WriterLock) -> None:
        self.engine = engine
        self.lock = lock
        self.dialect = engine.dialect
        self.url = engine.url

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.lock.held(), self.engine.begin() as conn:
            yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def dispose(self) -> None:
        self.engine.dispose()
        self.lock.close()


Writer = Engine | SerialisedEngine


# The WAL is started over once it holds more than this many pages (4 KB each: 128 MB), and
# its file cut back to WAL_SIZE_LIMIT bytes; readers get RESTART_WAIT_MS to leave it.
WAL_RESTART_FRAMES = 32_768
WAL_SIZE_LIMIT = 64 * 1024 * 1024
RESTART_WAIT_MS = 100


@dataclass(frozen=True)
class Database:
    """``writer`` commits durably (the ingest log, keys, projects). ``processing_writer``
    is for effects that are rebuilt from the log after a crash: on SQLite it skips the
    fsync of each commit, since a later durable commit (or the replay of the log entries,
    whose position rolls back with the effects) covers it."""

    url: str
    writer: Writer  # on SQLite, a SerialisedEngine
    reader: Engine
    processing_writer: Writer

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    @property
    def file(self) -> str | None:
        """The SQLite database's file (None on PostgreSQL)."""
        return sqlite_file(self.url)

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the SQLite database, and keep the WAL short.

        A PASSIVE checkpoint copies pages beside the writers. But SQLite writes the WAL
        from its start again only when a writer begins right after a checkpoint that
        copied everything, and under a steady load some write always came in between: the
        WAL grew without end (1.4 GB in a minute of bench/ingest.py), and every page read
        got slower as it looked through the growing WAL's index. So once the WAL holds
        more than ``WAL_RESTART_FRAMES``, writers are held back (the writer lock) while a
        RESTART checkpoint copies the rest and waits, briefly, for readers to leave the
        WAL; the next write then starts it over (and trims the file to
        ``journal_size_limit``). If a reader stays longer, the next round tries again."""
        if not self.is_sqlite:
            return
        with self.reader.connect() as conn:
            _, frames, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        lock = getattr(self.writer, "lock", None)
        if frames <= WAL_RESTART_FRAMES or lock is None:
            return
        with lock.held(), self.reader.connect() as conn:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            try:
                busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)").one()
            finally:
                conn.exec_driver_sql("PRAGMA busy_timeout=30000")
        if busy:
            logger.info("WAL restart postponed: readers still use it (%d pages)", frames)

    def sync(self) -> None:
        """Make every transaction committed so far durable, whatever ``synchronous`` its
        connection had: fsync the WAL (committed frames are written at commit, fsynced
        only by a FULL commit or a checkpoint) and the database file (a checkpoint may
        have moved the frames there and started the WAL over). Nothing on PostgreSQL,
        whose ``synchronous_commit=off`` commits are flushed within a fraction of a
        second by its WAL writer and survive a crash of ours."""
        database = self.file
        if database is None:
            return
        for path in (f"{database}-wal", database):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def dispose(self) -> None:
        for engine in {
            id(e): e for e in (self.writer, self.processing_writer, self.reader)
        }.values():
            engine.dispose()


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (``sqlite:///path``, or a URI filename,
    ``sqlite:///file:path?mode=ro&uri=true``); None for another database or in memory."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if database and parsed.query.get("uri") == "true" and database.startswith("file:"):
        database = database.removeprefix("file:")
        database = database.removeprefix("//") if database.startswith("///") else database
    if not database or database == ":memory:":
        return None
    return database


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str, *, immediate: bool, synchronous: str) -> Engine:
    engine = sa.create_engine(
        url,
        json_serializer=_json_serializer,
        json_deserializer=_json_deserializer,
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
        # No checkpoint inside a commit: copying the WAL into the database took 20-30 ms,
        # paid by whichever writer crossed the threshold, with the write lock held. The
        # checkpointer thread (Database.checkpoint) does it beside the writers instead.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # A WAL started over is cut back to this size (it keeps its largest size otherwise).
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


def open_database(url: str, *, sqlite_synchronous: str = "FULL") -> Database:
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        database = sqlite_file(url)
        lock_path = f"{database}.writer-lock" if database is not None else None
        lock = WriterLock(lock_path)
        writer = SerialisedEngine(
            _sqlite_engine(url, immediate=True, synchronous=sqlite_synchronous), lock
        )
        processing = SerialisedEngine(
            _sqlite_engine(url, immediate=True, synchronous="NORMAL"), lock
        )
        reader = _sqlite_engine(url, immediate=False, synchronous=sqlite_synchronous)
        return Database(url=url, writer=writer, reader=reader, processing_writer=processing)
    engine = _postgresql_engine(url)
    # The worker's commits don't wait for the WAL flush: like the SQLite consumer's, its
    # effects and its log position commit (or vanish, after a database crash) together,
    # and the log entries they came from were committed durably.
    return Database(
        url=url,
        writer=engine,
        reader=engine,
        processing_writer=_postgresql_engine(url, synchronous_commit="off"),
    )


# A database that is down or does not answer must cost a request seconds, not minutes
# (docs/reliability.md, "Database outages"): connecting gives up after CONNECT_TIMEOUT
# (libpq's default is none; psycopg's 130 s), and the check of a pooled connection before
# use (pre-ping) after PING_TIMEOUT, so that a server that accepts TCP but never answers
# is noticed. Statements themselves are not bounded (a long query is legitimate): one
# already running when the server froze waits until it answers or TCP gives up.
CONNECT_TIMEOUT = 3  # seconds; a connect_timeout in the URL's query wins
PING_TIMEOUT = 2.0  # seconds


@functools.cache
def _bounded_connection_class() -> type[Any] | None:
    import psycopg

    if "timeout" not in inspect.signature(psycopg.Connection.wait).parameters:
        return None  # psycopg before 3.2.1: pings wait as long as TCP does
    wait_timeout = getattr(psycopg.errors, "_WaitTimeout", psycopg.OperationalError)

    class BoundedConnection(psycopg.Connection[Any]):
        """Waits at most ``wait_limit`` seconds for the server when it is set (it is,
        while the connection is idle in the pool and for the pre-ping)."""

        wait_limit: float | None = PING_TIMEOUT

        def wait(self, gen: Any, interval: Any = None, timeout: float | None = None) -> Any:
            limit = self.wait_limit if timeout is None else None
            kwargs: dict[str, Any] = {} if interval is None else {"interval": interval}
            if limit is None:
                return super().wait(gen, timeout=timeout, **kwargs)
            try:
                return super().wait(gen, timeout=limit, **kwargs)
            except wait_timeout:
                self.close()  # a request is outstanding: the connection is unusable
                raise psycopg.OperationalError(
                    f"the database did not answer within {limit:g} s"
                ) from None

    return BoundedConnection


def _postgresql_engine(url: str, *, synchronous_commit: str | None = None) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in sa.engine.make_url(url).query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    if synchronous_commit is not None:
        connect_args["options"] = f"-c synchronous_commit={synchronous_commit}"
    engine = sa.create_engine(
        url,
        json_serializer=_json_serializer,
        json_deserializer=_json_deserializer,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    connection_class = _bounded_connection_class()
    if connection_class is None:
        return engine

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)

    # Bounded while pooled (so the pre-ping is), unbounded while checked out.
    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.wait_limit = None

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.wait_limit = PING_TIMEOUT

    return engine
