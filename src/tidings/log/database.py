"""The ingest log as a table in the main database (the embedded default).

Appends and the idempotency records of the same requests share one transaction, so a
key is never recorded for entries that were not stored, nor the reverse.

Order of visibility: a reader keeps, per partition, the highest position it has applied,
so an entry must never become visible after one with a higher position. SQLite has one
writer at a time. On PostgreSQL, sequence numbers are handed out when rows are inserted
but become visible when their transaction commits, and two API processes' transactions
can commit in the other order (tests/log/test_database_log.py shows the reader skipping
entries). So every append transaction on PostgreSQL first takes one transaction-scoped
advisory lock: appends commit one after the other, and PostgreSQL makes a transaction
visible before it releases its locks. The group committer keeps this cheap: each
transaction carries everything its process queued meanwhile.

On SQLite the log is a file of its own beside the database (``open_log_file``): the
appends of the API and the worker's transactions would otherwise take turns on one
write lock and one WAL, and the acknowledgements waited for the worker
(docs/design.md, "The ingest log in its own file"). SQLite does not commit a
transaction across two files atomically in WAL mode, so nothing relies on it:

- the idempotency records of ingest requests live in the log file, in the transaction of
  their entries, as before (records written with a change in the database, such as list
  member changes, stay in the database; each store reads the other's as a fallback);
- the worker's positions stay in the database, in the transaction of its effects, and
  the log is trimmed afterwards (``trim``), below the newest applied position, once the
  database has made that position durable (``Database.sync``: the worker commits without
  an fsync). A trim that is lost, or done late, only leaves applied entries behind,
  which the positions skip.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.domain.ingest import AppendOutcome, AppendRequest, LogEntry, LogRecord
from tidings.store.bulk import BulkInsert
from tidings.store.database import Database, SerialisedEngine, Writer, open_database
from tidings.store.idempotency import store_answer
from tidings.store.tables import idempotency_keys, ingest_log, log_positions

__all__ = [
    "LOG_FILE_VERSION",
    "DatabaseLog",
    "DirectAppender",
    "LogFileError",
    "entry_rows",
    "log_file_path",
    "open_log_file",
]

logger = logging.getLogger(__name__)

# JSON, not MessagePack: entries hold the client's JSON as sent, and JSON allows integers
# of any size (MessagePack stops at 64 bits; the fuzz test found it).
_encode = msgspec.json.Encoder().encode
_COLUMNS = ("partition", "project_id", "kind", "payload", "accepted_at")
_decode = msgspec.json.Decoder().decode
# pg_advisory_xact_lock key of the append lock (any constant; "TDNGLOG" in ASCII).
APPEND_LOCK = 0x54444E474C4F47


Row = tuple[int, int, str, bytes, int]


def entry_rows(entries: Sequence[LogEntry]) -> list[Row]:
    """The ``ingest_log`` rows of ``entries`` (payloads as the JSON they are stored as)."""
    return [(e.partition, e.project_id, e.kind, _encode(e.payload), e.accepted_at) for e in entries]


class DirectAppender:
    """Appends of plain entries to SQLite's log file (no ``Idempotency-Key``, no positions
    asked for: nearly every request) as one multi-row ``INSERT`` in autocommit, on a
    connection of the committer's own, outside the writer lock.

    The group committer shares the GIL with the event loop, and every call into SQLite
    releases it: re-taking it waits for the loop (up to a switch interval) each time. An
    append through the engine (the writer lock's two ``flock`` calls, ``BEGIN``, the
    insert, ``COMMIT``) paid that five or six times per commit: 1.2-1.5 ms per commit
    where the work is 0.4 ms of CPU and a 0.1 ms fsync. Here it is paid once. The log
    file's only other writers are the trim (a short delete, four times a second) and the
    checkpointer; SQLite's own lock and busy handler keep them apart."""

    def __init__(self, engine: Engine, *, owns: Database | None = None) -> None:
        self._engine = engine
        self._insert = BulkInsert("sqlite", "qmark", "ingest_log", _COLUMNS, chunk=6_000)
        self._lock = threading.Lock()  # the committer's; a test may append from elsewhere
        self._conn: Any = None
        self._owns = owns

    @classmethod
    def open(cls, url: str, *, sqlite_synchronous: str = "FULL") -> DirectAppender:
        """An appender with its own engine on the log file at ``url`` (the log writer
        process, tidings/log/writer.py); ``close`` disposes of it."""
        db = open_database(url, sqlite_synchronous=sqlite_synchronous)
        writer = db.writer
        raw = writer.engine if isinstance(writer, SerialisedEngine) else writer
        return cls(raw, owns=db)

    def connect(self) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self._engine.raw_connection()  # the engine's PRAGMAs, no BEGIN

    def __call__(self, rows: Sequence[Row]) -> None:
        self.connect()
        with self._lock:
            driver = self._conn.driver_connection
            statements = list(self._insert.statements(rows))
            if len(statements) == 1:
                driver.execute(*statements[0])  # its own transaction
                return
            driver.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    driver.execute(sql, params)
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._owns is not None:
                self._owns.dispose()


class DatabaseLog:
    """The log in ``engine``'s database. ``positions`` is the database holding the
    worker's ``log_positions`` when that is another one (SQLite's log file); then
    ``sync_positions`` makes its committed transactions durable before a trim."""

    def __init__(
        self,
        engine: Writer,
        reader: Engine,
        partitions: int,
        *,
        positions: Engine | None = None,
        sync_positions: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.reader = reader
        self.partitions = partitions
        self.positions = positions if positions is not None else reader
        self.own_file = positions is not None
        self._sync_positions = sync_positions
        self._trimmed = 0
        self._serialise = engine.dialect.name == "postgresql"
        self._insert_idem = self._insert_ignore(idempotency_keys)
        self._insert_entries = BulkInsert(
            engine.dialect.name,
            engine.dialect.paramstyle,
            "ingest_log",
            _COLUMNS,
        )
        self._direct = None
        if self.own_file:
            raw = engine.engine if isinstance(engine, SerialisedEngine) else engine
            self._direct = DirectAppender(raw)

    def close(self) -> None:
        """Close the committer's own connection (SQLite's log file)."""
        if self._direct is not None:
            self._direct.close()

    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            insert: Any = postgresql.insert(table)
        else:
            insert = sqlite.insert(table)
        # RETURNING tells whether the row went in: psycopg reports no rowcount here.
        return insert.on_conflict_do_nothing().returning(table.c.key)

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        if self._direct is not None and not any(
            r.idempotency is not None or r.want_positions for r in requests
        ):
            rows = [row for r in requests for row in entry_rows(r.entries)]
            if rows:
                self._direct(rows)
            return [AppendOutcome(appended=True) for _ in requests]
        outcomes: list[AppendOutcome] = []
        plain: list[Row] = []
        with self.engine.begin() as conn:
            if self._serialise:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})")
            for request in requests:
                if request.idempotency is not None:
                    if request.resume:  # the record is stored: give it its answer
                        record = request.idempotency
                        if record.status is not None:
                            store_answer(
                                conn,
                                record.project_id,
                                record.key,
                                record.status,
                                record.body or b"",
                            )
                    elif not self._claim(conn, request):
                        outcomes.append(AppendOutcome(appended=False))
                        continue
                rows = entry_rows(request.entries)
                outcome = AppendOutcome(appended=True)
                if request.want_positions and rows:
                    result = conn.execute(
                        sa.insert(ingest_log).returning(
                            ingest_log.c.partition, ingest_log.c.seq, sort_by_parameter_order=True
                        ),
                        [dict(zip(_COLUMNS, row, strict=True)) for row in rows],
                    )
                    outcome.positions = [(int(p), int(s)) for p, s in result]
                else:
                    plain.extend(rows)
                outcomes.append(outcome)
            if plain:
                self._insert_entries(conn, plain)
        return outcomes

    def _claim(self, conn: Connection, request: AppendRequest) -> bool:
        record = request.idempotency
        assert record is not None
        result = conn.execute(
            self._insert_idem,
            {
                "project_id": record.project_id,
                "key": record.key,
                "request_hash": record.request_hash,
                "status": record.status,
                "body": record.body,
                "created_at": record.created_at,
            },
        )
        return result.first() is not None

    def read(self, partition: int, after: int, limit: int) -> list[LogRecord]:
        return self._read((ingest_log.c.partition == partition, ingest_log.c.seq > after), limit)

    def read_all(self, after: int, limit: int) -> list[LogRecord]:
        """Entries of every partition above ``after``, oldest first (for a consumer that
        owns all partitions: one query instead of one per partition)."""
        return self._read((ingest_log.c.seq > after,), limit)

    def _read(self, conditions: tuple[Any, ...], limit: int) -> list[LogRecord]:
        query = (
            sa.select(
                ingest_log.c.seq,
                ingest_log.c.partition,
                ingest_log.c.project_id,
                ingest_log.c.kind,
                ingest_log.c.payload,
                ingest_log.c.accepted_at,
            )
            .where(*conditions)
            .order_by(ingest_log.c.seq)
            .limit(limit)
        )
        with self.reader.connect() as conn:
            rows = conn.execute(query).all()
        return [
            LogRecord(
                seq=seq,
                partition=partition,
                project_id=project_id,
                kind=kind,
                payload=_decode(payload),
                accepted_at=accepted_at,
            )
            for seq, partition, project_id, kind, payload, accepted_at in rows
        ]

    def trim_through(self, conn: Connection, upto: int) -> None:
        """Forget every entry at or below ``upto`` inside the caller's transaction (for a
        consumer that owns every partition and has applied all of them that far). Nothing
        when the log is in a file of its own: ``trim`` forgets them afterwards."""
        if not self.own_file:
            conn.execute(sa.delete(ingest_log).where(ingest_log.c.seq <= upto))

    def trim(self, partition: int, upto: int) -> int:
        if self.own_file:
            # The consumer asks once per partition; positions at or below what was
            # trimmed already cannot move the newest applied one: no query for them.
            return self._trim_applied() if upto > self._trimmed else 0
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.delete(ingest_log).where(
                    ingest_log.c.partition == partition, ingest_log.c.seq <= upto
                )
            )
        return int(result.rowcount)

    def _trim_applied(self) -> int:
        """Forget every entry at or below the newest applied position (SQLite's one
        worker applies the log in position order: see ``_pending_sqlite``), once the
        database holding that position has made it durable."""
        with self.positions.connect() as conn:
            applied = int(conn.execute(sa.select(sa.func.max(log_positions.c.seq))).scalar() or 0)
        if applied <= self._trimmed:
            return 0
        if self._sync_positions is not None:
            self._sync_positions()
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(ingest_log).where(ingest_log.c.seq <= applied))
        self._trimmed = applied
        return int(result.rowcount)

    def heads(self) -> dict[int, int]:
        """The newest position of each partition that has entries."""
        query = sa.select(ingest_log.c.partition, sa.func.max(ingest_log.c.seq)).group_by(
            ingest_log.c.partition
        )
        with self.reader.connect() as conn:
            return {int(p): int(s) for p, s in conn.execute(query)}

    def last_seq(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(ingest_log.c.seq))).scalar() or 0)

    def pending(self) -> int:
        if self.engine.dialect.name == "sqlite":
            return self._pending_sqlite()
        positions = sa.select(log_positions.c.partition, log_positions.c.seq).subquery()
        query = (
            sa.select(sa.func.count())
            .select_from(
                ingest_log.outerjoin(positions, positions.c.partition == ingest_log.c.partition)
            )
            .where(ingest_log.c.seq > sa.func.coalesce(positions.c.seq, 0))
        )
        with self.reader.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _pending_sqlite(self) -> int:
        """SQLite has one worker, holding every partition, and it applies the log in
        position order: what it has not applied is what lies above its newest position.
        Positions are handed out one after the other (``AUTOINCREMENT``; a rolled-back
        append gives its numbers back), so two maxima tell how many entries that is,
        where counting them would read every one (the log has no index to count from,
        migration 0007, and ``/api/health`` asks on every probe)."""
        # The position first: read after the head, it could pass it (never below 0).
        with self.positions.connect() as conn:
            applied = conn.execute(sa.select(sa.func.max(log_positions.c.seq))).scalar()
        return max(0, self.last_seq() - int(applied or 0))


# -- SQLite: the log in a file of its own ----------------------------------------------

# The log file's layout (``PRAGMA user_version``): its tables are ``ingest_log`` and
# ``idempotency_keys`` as declared in ``tidings.store.tables``.
LOG_FILE_VERSION = 1
_MOVE_CHUNK = 10_000


class LogFileError(RuntimeError):
    """The log file beside the database was written by a newer version of Tidings."""


def log_file_path(database: str) -> str:
    """The log file of SQLite database file ``database``: ``tidings.db`` → ``tidings-log.db``."""
    root, extension = os.path.splitext(database)
    return f"{root}-log{extension}"


def open_log_file(db: Database, *, sqlite_synchronous: str = "FULL") -> Database:
    """Open the ingest log file beside SQLite database ``db``, creating it on first use.

    Entries that an earlier version left in the database's own ``ingest_log`` move there
    with their positions, and the file's next position is raised above every position
    the database has seen (its log's, its worker's): a log file that is new, or restored
    from an older backup than the database, never hands out a position the worker has
    passed already, which it would skip."""
    database = sa.engine.make_url(db.url).database
    if db.file is None or not database:
        raise ValueError("the SQLite ingest log needs a database file")
    url = sa.engine.make_url(db.url).set(database=log_file_path(database))
    log_db = open_database(
        url.render_as_string(hide_password=False), sqlite_synchronous=sqlite_synchronous
    )
    try:
        _prepare(log_db, db)
    except BaseException:
        log_db.dispose()
        raise
    return log_db


def _prepare(log_db: Database, db: Database) -> None:
    version, sequence = _log_file_state(log_db)
    if version > LOG_FILE_VERSION:
        raise LogFileError(
            f"The ingest log file {log_db.file} is newer than this version of Tidings "
            f"(layout {version}, this version knows {LOG_FILE_VERSION}): upgrade Tidings."
        )
    used, left_behind = _database_state(db)
    if version == LOG_FILE_VERSION and not left_behind and sequence >= used:
        return  # nothing to write (the files may be read-only)
    with log_db.writer.begin() as conn:  # the log's writer lock: one process at a time
        if int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0) == 0:
            ingest_log.metadata.create_all(conn, tables=[ingest_log, idempotency_keys])
            conn.exec_driver_sql(f"PRAGMA user_version={LOG_FILE_VERSION}")
        moved, moved_through = _move_entries(conn, db) if left_behind else (0, 0)
        conn.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'ingest_log', 0 WHERE NOT EXISTS "
            "(SELECT 1 FROM sqlite_sequence WHERE name = 'ingest_log')"
        )
        conn.exec_driver_sql(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'ingest_log'", (used,)
        )
    if moved:
        # Only once the log file has them: a crash before this moves them again (the
        # positions are the same, so the second copy is ignored).
        with db.writer.begin() as main:
            main.execute(sa.delete(ingest_log).where(ingest_log.c.seq <= moved_through))
        logger.info("moved %d ingest log entries from the database to %s", moved, log_db.file)


def _log_file_state(log_db: Database) -> tuple[int, int]:
    """The log file's layout version (0: new) and the last position it handed out."""
    with log_db.reader.connect() as conn:
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        if version == 0:
            return 0, 0
        sequence = conn.exec_driver_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = 'ingest_log'"
        ).scalar()
    return version, int(sequence or 0)


def _database_state(db: Database) -> tuple[int, bool]:
    """The highest log position the database has seen (handed out by its own log, or
    applied by its worker), and whether its own log still holds entries."""
    with db.reader.connect() as conn:
        tables = set(
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
                "('ingest_log', 'log_positions', 'sqlite_sequence')"
            ).scalars()
        )
        if not {"ingest_log", "log_positions"} <= tables:
            return 0, False  # a database without its schema yet: nothing to carry over
        handed_out = 0
        if "sqlite_sequence" in tables:
            handed_out = int(
                conn.exec_driver_sql(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'ingest_log'"
                ).scalar()
                or 0
            )
        applied = int(conn.execute(sa.select(sa.func.max(log_positions.c.seq))).scalar() or 0)
        left = conn.execute(sa.select(ingest_log.c.seq).limit(1)).first() is not None
    return max(handed_out, applied), left


def _move_entries(conn: Connection, db: Database) -> tuple[int, int]:
    """Copy the entries of the database's ``ingest_log`` (an earlier version's) into the
    log file, keeping their positions; (how many, the newest position)."""
    insert = sqlite.insert(ingest_log).on_conflict_do_nothing()
    moved = after = 0
    while True:
        with db.reader.connect() as main:
            rows = (
                main.execute(
                    sa.select(ingest_log)
                    .where(ingest_log.c.seq > after)
                    .order_by(ingest_log.c.seq)
                    .limit(_MOVE_CHUNK)
                )
                .mappings()
                .all()
            )
        if not rows:
            return moved, after
        conn.execute(insert, [dict(row) for row in rows])
        moved += len(rows)
        after = int(rows[-1]["seq"])
