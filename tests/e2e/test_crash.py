"""SIGKILL in the middle of a bounded concurrent load: nothing acknowledged is lost,
nothing is stored twice."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.server import Server, create_project

pytestmark = pytest.mark.slow

WORKERS = 16
KILL_AFTER = 600  # acknowledged requests before the kill
MAX_REQUESTS = 4000
SEQUENCE = itertools.count()  # event numbers are unique across every load of the test


async def load(
    server: Server, key: str, acked: set[int], failed: list[list[dict]], stop_at: int
) -> None:
    """Send batches of 1–3 events until ``stop_at`` acks or the server dies."""
    counter = SEQUENCE

    async def worker(client: httpx.AsyncClient, wid: int) -> None:
        for _ in range(MAX_REQUESTS // WORKERS):
            if len(acked) >= stop_at:
                return
            batch = []
            for _ in range(1 + next(counter) % 3):
                seq = next(counter)
                event = {"name": "Tick", "external_id": f"user-{seq % 50}", "data": {"seq": seq}}
                if seq % 2 == 0:
                    event["message_id"] = f"msg-{seq}"
                batch.append(event)
            try:
                response = await client.post(
                    "/api/client/events", json=batch, headers={"Authorization": f"Bearer {key}"}
                )
            except httpx.HTTPError:
                failed.append(batch)
                return
            if response.status_code == 204:
                acked.update(e["data"]["seq"] for e in batch)
            else:
                failed.append(batch)

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await asyncio.gather(*[worker(client, w) for w in range(WORKERS)])


def stored_seqs(database: Path) -> list[int]:
    with sqlite3.connect(database) as conn:
        return [row[0] for row in conn.execute("SELECT json_extract(data, '$.seq') FROM events")]


@pytest.mark.parametrize("worker_mode", ["thread", "process"])
async def test_sigkill_under_load_loses_no_acknowledged_event(
    tmp_path: Path, worker_mode: str
) -> None:
    database = tmp_path / "tidings.db"
    keys = create_project(database)
    server = Server(database, TIDINGS_WORKER_MODE=worker_mode).start()
    acked: set[int] = set()
    failed: list[list[dict]] = []
    try:
        kill_task = asyncio.create_task(load(server, keys["public_key"], acked, failed, 10**9))
        while len(acked) < KILL_AFTER and not kill_task.done():
            await asyncio.sleep(0.005)
        server.kill()  # mid-load: requests are in flight
        await asyncio.wait_for(kill_task, 30)
        acked_before_kill = len(acked)
        assert acked_before_kill >= KILL_AFTER

        server.start()
        # Retry what failed, as a client would; only items with a message_id are safe to
        # retry without duplicates, which is what the wire contract promises.
        retry = [[e for e in batch if "message_id" in e] for batch in failed]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for batch in filter(None, retry):
                response = await client.post(
                    "/api/client/events",
                    json=batch,
                    headers={"Authorization": f"Bearer {keys['public_key']}"},
                )
                assert response.status_code == 204
                acked.update(e["data"]["seq"] for e in batch)
        await load(server, keys["public_key"], acked, [], len(acked) + 300)
        server.wait_drained()
    finally:
        server.stop()

    stored = stored_seqs(database)
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:10]}"
    duplicates = {seq for seq, n in Counter(stored).items() if n > 1}
    assert not duplicates, f"stored twice: {sorted(duplicates)[:10]}"
    assert failed, "the kill should have interrupted requests in flight"


async def test_sigkill_on_postgresql_loses_no_acknowledged_event(pg_url: str) -> None:
    """The same on PostgreSQL: `tidings serve` (API and worker in one process) killed
    mid-load, restarted, the failed requests retried."""
    keys = create_project(pg_url)
    server = Server(pg_url).start()
    acked: set[int] = set()
    failed: list[list[dict]] = []
    try:
        load_task = asyncio.create_task(load(server, keys["public_key"], acked, failed, 10**9))
        while len(acked) < KILL_AFTER and not load_task.done():
            await asyncio.sleep(0.005)
        server.kill()
        await asyncio.wait_for(load_task, 30)
        server.start()
        retry = [[e for e in batch if "message_id" in e] for batch in failed]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for batch in filter(None, retry):
                response = await client.post(
                    "/api/client/events",
                    json=batch,
                    headers={"Authorization": f"Bearer {keys['public_key']}"},
                )
                assert response.status_code == 204
                acked.update(e["data"]["seq"] for e in batch)
        await load(server, keys["public_key"], acked, [], len(acked) + 300)
        server.wait_drained()
    finally:
        server.stop()
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            stored = [int(n) for (n,) in conn.execute(sa.text("SELECT data->>'seq' FROM events"))]
    finally:
        engine.dispose()
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:10]}"
    duplicates = {seq for seq, n in Counter(stored).items() if n > 1}
    assert not duplicates, f"stored twice: {sorted(duplicates)[:10]}"
    assert failed, "the kill should have interrupted requests in flight"
