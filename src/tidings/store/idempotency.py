"""Stored answers of requests sent with an ``Idempotency-Key``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.ingest import RESUMABLE, IdempotencyRecord
from tidings.store.database import Writer
from tidings.store.tables import idempotency_keys

__all__ = ["IdempotencyStore", "store_answer"]


def store_answer(conn: Connection, project_id: int, key: str, status: int, body: bytes) -> bool:
    """Store the answer of the request holding ``key`` inside the caller's transaction,
    unless one is stored already; whether this one was."""
    result = conn.execute(
        sa.update(idempotency_keys)
        .where(
            idempotency_keys.c.project_id == project_id,
            idempotency_keys.c.key == key,
            sa.or_(idempotency_keys.c.status.is_(None), idempotency_keys.c.status == RESUMABLE),
        )
        .values(status=status, body=body)
    )
    return int(result.rowcount) == 1


class IdempotencyStore:
    """Records in one database. ``fallback`` is a store in another database whose records
    count too (on SQLite, ingest requests keep theirs in the log file, changes in the
    database keep theirs there): a key is looked up in both, so that it answers one
    request whichever endpoint sent it, and an expired one is forgotten in both."""

    def __init__(
        self, writer: Writer, reader: Engine, *, fallback: IdempotencyStore | None = None
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.fallback = fallback

    def with_fallback(self, other: IdempotencyStore) -> IdempotencyStore:
        """This store, reading ``other``'s records where it has none."""
        return IdempotencyStore(self.writer, self.reader, fallback=other)

    def get(self, project_id: int, key: str) -> IdempotencyRecord | None:
        record = self._get(project_id, key)
        if record is None and self.fallback is not None:
            return self.fallback.get(project_id, key)
        return record

    def _get(self, project_id: int, key: str) -> IdempotencyRecord | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(idempotency_keys).where(
                    idempotency_keys.c.project_id == project_id, idempotency_keys.c.key == key
                )
            ).first()
        if row is None:
            return None
        return IdempotencyRecord(
            project_id=row.project_id,
            key=row.key,
            request_hash=row.request_hash,
            created_at=row.created_at,
            status=row.status,
            body=row.body,
        )

    def complete(self, project_id: int, key: str, status: int, body: bytes) -> bool:
        """Store the answer unless one is stored already; whether this one was."""
        with self.writer.begin() as conn:
            return store_answer(conn, project_id, key, status, body)

    def give_up(self, project_id: int, key: str) -> None:
        """The request holding ``key`` stops waiting for its answer: a retry may compute it."""
        with self.writer.begin() as conn:
            conn.execute(
                sa.update(idempotency_keys)
                .where(
                    idempotency_keys.c.project_id == project_id,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.status.is_(None),
                )
                .values(status=RESUMABLE)
            )

    def forget(self, project_id: int, key: str, *, created_before: int) -> None:
        """Drop the key's record if it was created before ``created_before`` (it expired),
        in the fallback's database too, so that the key can be used afresh."""
        if self.fallback is not None:
            self.fallback.forget(project_id, key, created_before=created_before)
        with self.writer.begin() as conn:
            conn.execute(
                sa.delete(idempotency_keys).where(
                    idempotency_keys.c.project_id == project_id,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.created_at < created_before,
                )
            )

    def purge(self, created_before: int) -> int:
        """Drop every record created before ``created_before`` (not the fallback's)."""
        with self.writer.begin() as conn:
            result = conn.execute(
                sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < created_before)
            )
        return int(result.rowcount)
