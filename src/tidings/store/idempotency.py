"""Stored answers of requests sent with an ``Idempotency-Key``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.domain.ingest import IdempotencyRecord
from tidings.store.database import Writer
from tidings.store.tables import idempotency_keys

__all__ = ["IdempotencyStore"]


class IdempotencyStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader

    def get(self, project_id: int, key: str) -> IdempotencyRecord | None:
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

    def complete(self, project_id: int, key: str, status: int, body: bytes) -> None:
        with self.writer.begin() as conn:
            conn.execute(
                sa.update(idempotency_keys)
                .where(idempotency_keys.c.project_id == project_id, idempotency_keys.c.key == key)
                .values(status=status, body=body)
            )

    def forget(self, project_id: int, key: str, *, created_before: int) -> None:
        """Drop an expired or abandoned record so that the key can be used afresh."""
        with self.writer.begin() as conn:
            conn.execute(
                sa.delete(idempotency_keys).where(
                    idempotency_keys.c.project_id == project_id,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.created_at < created_before,
                )
            )

    def purge(self, created_before: int) -> int:
        with self.writer.begin() as conn:
            result = conn.execute(
                sa.delete(idempotency_keys).where(idempotency_keys.c.created_at < created_before)
            )
        return int(result.rowcount)
