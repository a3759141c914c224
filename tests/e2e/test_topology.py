"""The scale-out topology on one machine: PostgreSQL, two ``tidings api`` nodes and two
``tidings worker`` processes, with one worker killed (SIGKILL) in the middle of a bounded
load through both API nodes. Every acknowledged event is stored once, and each person's
events are applied in the order they were acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.server import Server, Worker, create_project, run_cli, wait_for_partition_holders
from tests.log.test_nats_log import nats_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

PEOPLE = 40
PER_PERSON = 30
KILL_AFTER = 400  # acknowledged events before one worker is killed


def test_api_refuses_an_unmigrated_postgresql_database(pg_url: str) -> None:
    result = run_cli(pg_url, "api", "--port", "1")
    assert result.returncode == 1
    assert "tidings migrate" in result.stderr
    assert run_cli(pg_url, "migrate").returncode == 0
    assert run_cli(pg_url, "migrate", "--down", "--revision", "base").returncode == 0
    result = run_cli(pg_url, "worker")
    assert result.returncode == 1
    assert "tidings migrate" in result.stderr


async def _load(
    urls: list[str], key: str, acked: dict[str, list[int]], killed: asyncio.Event
) -> None:
    """Each person's events are sent one after another (the next only after the previous
    one's 204), alternating between the API nodes; people run concurrently."""
    total = [0]

    async def person(client: httpx.AsyncClient, index: int) -> None:
        user = f"user-{index}"
        for n in range(PER_PERSON):
            url = urls[(index + n) % len(urls)]
            event = {
                "name": "Step",
                "external_id": user,
                "data": {"n": n},
                "user": {"data": {"last": n}},
            }
            for _attempt in range(20):  # a 503 or a dropped connection is retried
                try:
                    response = await client.post(
                        f"{url}/api/client/events",
                        json=[event],
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code == 204:
                    break
                assert response.status_code == 503, response.text
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"event {n} of {user} was never acknowledged")
            acked.setdefault(user, []).append(n)
            total[0] += 1
            if total[0] == KILL_AFTER:
                killed.set()

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*[person(client, i) for i in range(PEOPLE)])


async def _kill_when(killed: asyncio.Event, worker: Worker) -> None:
    await killed.wait()
    await asyncio.to_thread(worker.kill)


@pytest.fixture(params=["db", "jetstream"])
def log_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ingest log: the database's table, or a JetStream stream of this test's own."""
    if request.param == "db":
        yield "db"
        return
    from tests.log.test_nats_log import _delete_stream, _unique

    nats = str(request.getfixturevalue("nats_url"))
    stream, prefix = _unique()
    yield f"{nats}?stream={stream}&prefix={prefix}"
    _delete_stream(nats, stream)


def test_two_apis_two_workers_one_killed(pg_url: str, log_url: str) -> None:
    project = create_project(pg_url)
    env = {"TIDINGS_LOG_PARTITIONS": "8", "TIDINGS_LOG_URL": log_url}
    apis = [Server(pg_url, command="api", **env) for _ in range(2)]
    workers = [Worker(pg_url, **env) for _ in range(2)]
    processes: list[Server | Worker] = [*apis, *workers]
    try:
        for process in processes:
            process.start()
        wait_for_partition_holders(pg_url, 2)
        acked: dict[str, list[int]] = {}
        killed = asyncio.Event()

        async def run() -> None:
            await asyncio.gather(
                _load([a.url for a in apis], project["public_key"], acked, killed),
                _kill_when(killed, workers[0]),
            )

        asyncio.run(run())
        assert workers[0].process is not None and workers[0].process.returncode == -9
        apis[1].wait_drained(timeout=90)  # the surviving worker took every partition over
        engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT external_id, (data->>'n')::int FROM events "
                        "ORDER BY external_id, (data->>'n')::int"
                    )
                ).all()
                last: dict[str, int] = dict(
                    conn.execute(
                        sa.text("SELECT external_id, (data->>'last')::int FROM profiles")
                    ).all()
                )
        finally:
            engine.dispose()
        stored: dict[str, list[int]] = {}
        for user, n in rows:
            stored.setdefault(user, []).append(n)
        assert sum(len(v) for v in acked.values()) == PEOPLE * PER_PERSON
        for user, sent in acked.items():
            # Once each: nothing lost, nothing doubled.
            assert stored.get(user) == sent, f"{user}: stored {stored.get(user)}, sent {sent}"
        # In order: each person's events were sent one after another, so the trait the
        # last one set must be the one left (a replay of an older entry after a newer
        # one, say by the worker that took over, would leave an older value).
        assert last == {user: PER_PERSON - 1 for user in acked}
        killed_log, survivor_log = workers[0].stop(), workers[1].stop()
        # The killed worker was applying part of the log, and the survivor ended up
        # holding every partition.
        assert "took partition" in killed_log
        took, released = survivor_log.count("took partition"), survivor_log.count("released")
        assert took - released == 8, survivor_log
    finally:
        outputs = [p.stop() for p in processes]
        if any("Traceback" in o for o in outputs):
            print("\n".join(outputs))
