"""A bounded concurrent load of events against real ``tidings`` processes, the retries a
well-behaved client makes, and the check that every acknowledged event is stored once."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

SEQUENCE = itertools.count()  # event numbers (data.seq) are unique across the whole session

StoredSeqs = Callable[[], list[int]]  # the data.seq of every stored event, duplicates kept


@dataclass
class Batch:
    """One request: 1–3 events, each with its ``data.seq``."""

    events: list[dict[str, Any]]
    idempotency_key: str | None = None

    @property
    def seqs(self) -> list[int]:
        return [e["data"]["seq"] for e in self.events]

    def retry(self) -> Batch | None:
        """What a client may send again after no answer (or a 503) without risking a
        second effect, as the wire contract promises: the whole request under its
        ``Idempotency-Key``, else the events that carry a ``message_id``."""
        if self.idempotency_key is not None:
            return self
        events = [e for e in self.events if "message_id" in e]
        return Batch(events) if events else None


@dataclass
class Load:
    """Sends batches of events with ``concurrency`` clients; remembers what was
    acknowledged (204) and what must be retried."""

    api_key: str
    concurrency: int = 16
    keyed: bool = False  # every third request carries an Idempotency-Key (no message_ids)
    acked: set[int] = field(default_factory=set)
    retries: list[Batch] = field(default_factory=list)
    interrupted: int = 0  # requests that got no answer, or a 503
    unexpected: list[str] = field(default_factory=list)  # any other answer than 204 / 503
    replayed: int = 0  # 204s with Idempotent-Replayed: retries of requests already stored

    def new_batch(self) -> Batch:
        n = next(SEQUENCE)
        key = f"batch-{n}" if self.keyed and n % 3 == 0 else None
        events = []
        for _ in range(1 + n % 3):
            seq = next(SEQUENCE)
            event: dict[str, Any] = {
                "name": "Tick",
                "external_id": f"user-{seq % 50}",
                "data": {"seq": seq},
            }
            if key is None and seq % 2 == 0:
                event["message_id"] = f"msg-{seq}"
            events.append(event)
        return Batch(events, key)

    def _failed(self, batch: Batch) -> None:
        self.interrupted += 1
        retry = batch.retry()
        if retry is not None:
            self.retries.append(retry)

    async def run(
        self,
        urls: list[str],
        *,
        max_requests: int = 4000,
        until_acked: int | None = None,
        stop: asyncio.Event | None = None,
        retries_only: bool = False,
    ) -> None:
        """Send (retries first) until ``max_requests``, ``until_acked`` acknowledged
        events, ``stop``, or, for each client, the first request that gets no answer
        (the server died). ``retries_only``: send only what is waiting to be retried."""

        async def client_loop(client: httpx.AsyncClient, index: int) -> None:
            for n in range(max_requests // self.concurrency):
                if stop is not None and stop.is_set():
                    return
                if until_acked is not None and len(self.acked) >= until_acked:
                    return
                if self.retries:
                    batch = self.retries.pop()
                elif retries_only:
                    return
                else:
                    batch = self.new_batch()
                headers = {"Authorization": f"Bearer {self.api_key}"}
                if batch.idempotency_key is not None:
                    headers["Idempotency-Key"] = batch.idempotency_key
                url = urls[(index + n) % len(urls)]
                try:
                    response = await client.post(
                        f"{url}/api/client/events", json=batch.events, headers=headers
                    )
                except httpx.HTTPError:
                    self._failed(batch)
                    return
                if response.status_code == 204:
                    self.acked.update(batch.seqs)
                    self.replayed += response.headers.get("idempotent-replayed") == "true"
                elif response.status_code == 503:
                    self._failed(batch)
                    await asyncio.sleep(0.05)
                else:
                    self.unexpected.append(f"{response.status_code} {response.text[:300]}")

        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*[client_loop(client, i) for i in range(self.concurrency)])

    def summary(self) -> str:
        return (
            f"{len(self.acked)} events acknowledged, {self.interrupted} requests "
            f"interrupted, {self.replayed} replayed"
        )


def sqlite_stored_seqs(database: Path) -> StoredSeqs:
    def read() -> list[int]:
        with sqlite3.connect(database) as conn:
            query = "SELECT json_extract(data, '$.seq') FROM events"
            return [int(row[0]) for row in conn.execute(query)]

    return read


def postgres_stored_seqs(url: str) -> StoredSeqs:
    def read() -> list[int]:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                query = sa.text("SELECT data->>'seq' FROM events")
                return [int(n) for (n,) in conn.execute(query)]
        finally:
            engine.dispose()

    return read


def stored_seqs_of(database: Path | str) -> StoredSeqs:
    if isinstance(database, Path):
        return sqlite_stored_seqs(database)
    return postgres_stored_seqs(database)


def assert_stored_once(load: Load, stored: list[int], context: str = "") -> None:
    """Every acknowledged event stored, and no event (acknowledged or not) stored twice."""
    where = f" ({context})" if context else ""
    assert not load.unexpected, f"unexpected answers{where}: {load.unexpected[:5]}"
    missing = load.acked - set(stored)
    assert not missing, (
        f"{len(missing)} of {len(load.acked)} acknowledged events lost{where}: "
        f"{sorted(missing)[:10]}"
    )
    duplicates = sorted(seq for seq, n in Counter(stored).items() if n > 1)
    assert not duplicates, f"{len(duplicates)} events stored twice{where}: {duplicates[:10]}"
