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
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from tidings.domain.ingest import AppendOutcome, AppendRequest, LogRecord
from tidings.store.bulk import BulkInsert
from tidings.store.database import Writer
from tidings.store.idempotency import store_answer
from tidings.store.tables import idempotency_keys, ingest_log, log_positions

__all__ = ["DatabaseLog"]

# JSON, not MessagePack: entries hold the client's JSON as sent, and JSON allows integers
# of any size (MessagePack stops at 64 bits; the fuzz test found it).
_encode = msgspec.json.Encoder().encode
_COLUMNS = ("partition", "project_id", "kind", "payload", "accepted_at")
_decode = msgspec.json.Decoder().decode
# pg_advisory_xact_lock key of the append lock (any constant; "TDNGLOG" in ASCII).
APPEND_LOCK = 0x54444E474C4F47


class DatabaseLog:
    def __init__(self, engine: Writer, reader: Engine, partitions: int) -> None:
        self.engine = engine
        self.reader = reader
        self.partitions = partitions
        self._serialise = engine.dialect.name == "postgresql"
        self._insert_idem = self._insert_ignore(idempotency_keys)
        self._insert_entries = BulkInsert(
            engine.dialect.name,
            engine.dialect.paramstyle,
            "ingest_log",
            _COLUMNS,
        )

    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            insert: Any = postgresql.insert(table)
        else:
            insert = sqlite.insert(table)
        # RETURNING tells whether the row went in: psycopg reports no rowcount here.
        return insert.on_conflict_do_nothing().returning(table.c.key)

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        plain: list[tuple[int, int, str, bytes, int]] = []
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
                rows = [
                    (e.partition, e.project_id, e.kind, _encode(e.payload), e.accepted_at)
                    for e in request.entries
                ]
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

    @staticmethod
    def trim_through(conn: Connection, upto: int) -> None:
        """Forget every entry at or below ``upto`` inside the caller's transaction (for a
        consumer that owns every partition and has applied all of them that far)."""
        conn.execute(sa.delete(ingest_log).where(ingest_log.c.seq <= upto))

    def trim(self, partition: int, upto: int) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.delete(ingest_log).where(
                    ingest_log.c.partition == partition, ingest_log.c.seq <= upto
                )
            )
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
        with self.reader.connect() as conn:
            head = conn.execute(sa.select(sa.func.max(ingest_log.c.seq))).scalar()
            applied = conn.execute(sa.select(sa.func.max(log_positions.c.seq))).scalar()
        return max(0, int(head or 0) - int(applied or 0))
