"""What the stores of providers, campaigns and templates share: the store's handles, the
``Then`` hook of creates, and reading one row back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import NotFound
from tidings.store.database import Writer

__all__ = ["Rows", "Then", "row_of"]


# Called inside a create's transaction with the new row (an Idempotency-Key's stored
# answer is written there, so that a retry replays it and a race has one winner).
Then = Callable[[Connection, dict[str, Any]], None]


def row_of(conn: Connection, table: sa.Table, row_id: int) -> dict[str, Any]:
    return dict(conn.execute(sa.select(table).where(table.c.id == row_id)).one()._mapping)


class Rows:
    """The handles every part of ``CampaignStore`` works with."""

    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        *,
        clock: Callable[[], int] | None = None,
        allow_private_webhooks: bool = False,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.clock = clock or (lambda: time.time_ns() // 1000)
        # TIDINGS_WEBHOOK_ALLOW_PRIVATE: webhook templates may name private addresses.
        self.allow_private_webhooks = allow_private_webhooks

    def _one(self, table: sa.Table, project_id: int, row_id: int, noun: str) -> dict[str, Any]:
        """A project's row by id, or 404 ``No <noun> <id>.``"""
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(table).where(table.c.project_id == project_id, table.c.id == row_id)
            ).first()
        if row is None:
            raise NotFound(f"No {noun} {row_id}.", param="id")
        return dict(row._mapping)
