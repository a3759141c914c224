"""SIGKILL at random moments under a bounded concurrent load, several rounds in a row:
no acknowledged event is lost, none is stored twice.

The kill times come from a seeded generator: ``TIDINGS_TEST_SEED`` if set, else a fresh
seed, printed and named in every assertion message. The seed fixes the kill times and
the choice of victims; where in the server's work a kill lands still depends on the
machine's timing, so run a failing seed a few times.

Between rounds the client behaves as the wire contract expects: a request that got no
answer (or a 503) is sent again with its ``Idempotency-Key``, or, without one, only its
events that carry a ``message_id``; the others are dropped (they may be stored, at most
once)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from tests.e2e.load import Load, assert_stored_once, stored_seqs_of
from tests.e2e.server import Server, Worker, create_project, wait_for_partition_holders

pytestmark = pytest.mark.slow

ROUNDS = 4
MAX_REQUESTS = 40_000  # per round; each round is ended by its kill long before


@pytest.fixture
def seed() -> int:
    value = os.environ.get("TIDINGS_TEST_SEED")
    seed = int(value) if value else random.SystemRandom().randrange(2**32)
    print(f"TIDINGS_TEST_SEED={seed}")
    return seed


def _context(seed: int, kills: list[str]) -> str:
    return f"TIDINGS_TEST_SEED={seed}; kills: {', '.join(kills)}"


async def _retry_and_drain(load: Load, api: Server, context: str) -> None:
    """Send what the kills left unanswered until it is acknowledged, then drain."""
    for _ in range(5):
        await load.run([api.url], retries_only=True)
        if not load.retries:
            break
        await asyncio.sleep(0.5)
    assert not load.retries, f"{len(load.retries)} retries never acknowledged ({context})"
    await asyncio.to_thread(api.wait_drained, 90)


@pytest.mark.parametrize("setup", ["sqlite-thread", "sqlite-process", "postgresql"])
async def test_serve_killed_at_random_moments(
    tmp_path: Path, setup: str, seed: int, request: pytest.FixtureRequest
) -> None:
    """`tidings serve` (API and worker in one process, or the worker as its child
    process) killed at a random moment of each round's load, restarted, the load
    resumed with the retries first."""
    rng = random.Random(seed)
    if setup == "postgresql":
        database: Path | str = str(request.getfixturevalue("pg_url"))
        server = Server(database)
    else:
        database = tmp_path / "tidings.db"
        server = Server(database, TIDINGS_WORKER_MODE=setup.removeprefix("sqlite-"))
    keys = create_project(database)
    load = Load(keys["public_key"], keyed=True)
    kills: list[str] = []
    try:
        for _ in range(ROUNDS):
            server.start()
            load_task = asyncio.create_task(load.run([server.url], max_requests=MAX_REQUESTS))
            delay = rng.uniform(0.0, 2.5)
            await asyncio.sleep(delay)
            acked = len(load.acked)
            await asyncio.to_thread(server.kill)
            kills.append(f"{delay:.2f} s ({acked} acked)")
            await asyncio.wait_for(load_task, 30)
        server.start()
        await _retry_and_drain(load, server, _context(seed, kills))
    finally:
        output = server.stop()
    context = _context(seed, kills)
    assert "Traceback" not in output, f"{context}\n{output}"
    print(f"{load.summary()}; {context}")
    assert_stored_once(load, stored_seqs_of(database)(), context)
    assert load.interrupted, f"no kill interrupted a request ({context})"


async def test_worker_killed_at_random_moments_while_the_api_accepts(
    pg_url: str, seed: int
) -> None:
    """PostgreSQL, one `tidings api` and one `tidings worker` under a steady load. Each
    round kills the worker, the API, or both, each at its own random moment, and
    restarts them; the load goes on through worker kills and resumes after API kills.
    The moments are drawn from when the worker holds its partitions (it is applying
    batches then), up to 3 s later."""
    rng = random.Random(seed)
    keys = create_project(pg_url)
    env = {"TIDINGS_LOG_PARTITIONS": "8"}
    api = Server(pg_url, command="api", **env)
    worker = Worker(pg_url, **env)
    processes = {"api": api, "worker": worker}
    victims = [["worker"], ["worker"], ["api"], ["worker", "api"]]
    rng.shuffle(victims)
    load = Load(keys["public_key"], keyed=True)
    kills: list[str] = []
    worker_logs: list[str] = []
    try:
        for names in victims:
            if not api.alive:
                api.start()
            if not worker.alive:
                # The killed worker's leases are gone before the next one starts.
                await asyncio.to_thread(wait_for_partition_holders, pg_url, 0)
                worker.start()
            stop = asyncio.Event()
            load_task = asyncio.create_task(
                load.run([api.url], max_requests=MAX_REQUESTS, stop=stop)
            )
            # The clock starts once the worker holds the partitions, so that a kill of
            # the worker lands while it applies batches (the log grew meanwhile).
            await asyncio.to_thread(wait_for_partition_holders, pg_url, 1)
            started = time.monotonic()
            for at, name in sorted((rng.uniform(0.0, 3.0), name) for name in names):
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                await asyncio.to_thread(processes[name].kill)
                kills.append(f"{name} at {at:.2f} s ({len(load.acked)} acked)")
            # A little more load with the worker dead (the log grows) or the API dead.
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            stop.set()
            await asyncio.wait_for(load_task, 30)
            if not worker.alive:
                worker_logs.append(worker.stop())
        if not api.alive:
            api.start()
        if not worker.alive:
            await asyncio.to_thread(wait_for_partition_holders, pg_url, 0)
            worker.start()
        await _retry_and_drain(load, api, _context(seed, kills))
    finally:
        outputs = [api.stop(), worker.stop()]
    context = _context(seed, kills)
    print(f"{load.summary()}; {context}")
    assert_stored_once(load, stored_seqs_of(pg_url)(), context)
    assert any("took partition" in log for log in worker_logs), (
        f"no worker was killed while it held partitions ({context}): {worker_logs}"
    )
    assert not any("Traceback" in o for o in outputs), "\n".join([context, *outputs])
