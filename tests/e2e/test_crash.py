"""SIGKILL in the middle of a bounded concurrent load: nothing acknowledged is lost,
nothing is stored twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.load import Load, StoredSeqs, assert_stored_once, stored_seqs_of
from tests.e2e.server import Server, create_project

pytestmark = pytest.mark.slow

KILL_AFTER = 600  # acknowledged requests before the kill
MAX_REQUESTS = 4000


async def kill_restart_and_verify(server: Server, api_key: str, stored_seqs: StoredSeqs) -> None:
    """Load ``server`` (started), SIGKILL it after ``KILL_AFTER`` acknowledged events
    with requests in flight, restart it, retry what failed as a client would, load a
    little more, drain; then every acknowledged event is stored exactly once."""
    load = Load(api_key)
    try:
        load_task = asyncio.create_task(load.run([server.url], max_requests=MAX_REQUESTS))
        while len(load.acked) < KILL_AFTER and not load_task.done():
            await asyncio.sleep(0.005)
        server.kill()  # mid-load: requests are in flight
        await asyncio.wait_for(load_task, 30)
        assert len(load.acked) >= KILL_AFTER

        server.start()
        # Only what is safe to send again (items with a message_id), and each must be
        # accepted.
        await load.run([server.url], retries_only=True)
        assert not load.retries and not load.unexpected, load.unexpected[:5]
        await load.run([server.url], max_requests=MAX_REQUESTS, until_acked=len(load.acked) + 300)
        server.wait_drained()
    finally:
        server.stop()
    assert_stored_once(load, stored_seqs())
    assert load.interrupted, "the kill should have interrupted requests in flight"


@pytest.mark.parametrize("worker_mode", ["thread", "process"])
async def test_sigkill_under_load_loses_no_acknowledged_event(
    tmp_path: Path, worker_mode: str
) -> None:
    database = tmp_path / "tidings.db"
    keys = create_project(database)
    server = Server(database, TIDINGS_WORKER_MODE=worker_mode).start()
    await kill_restart_and_verify(server, keys["public_key"], stored_seqs_of(database))


async def test_sigkill_on_postgresql_loses_no_acknowledged_event(pg_url: str) -> None:
    """The same on PostgreSQL: `tidings serve` (API and worker in one process) killed
    mid-load, restarted, the failed requests retried."""
    keys = create_project(pg_url)
    server = Server(pg_url).start()
    await kill_restart_and_verify(server, keys["public_key"], stored_seqs_of(pg_url))
