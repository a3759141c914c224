"""The engine's guarantees, each with the mechanism that makes it hold:

- one entrance per (journey, entrance, user, key) under concurrent duplicates and a
  replayed batch (the unique constraint; the hook in the batch's transaction);
- a crash between a step's effect and its completion never repeats a send (one
  transaction for both);
- timers survive a restart; with two workers on PostgreSQL none fires twice and a claim
  held by a worker that dies is taken by the other (SKIP LOCKED in the applying
  transaction).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import (
    Clock,
    TableSends,
    journey_services,
    make_journey,
    send_events,
    tick,
)
from tidings.bootstrap import Services
from tidings.domain.ingest import LogRecord
from tidings.domain.sending import Enqueued, SendRequest
from tidings.journeys.engine import JourneyEngine
from tidings.journeys.hook import JourneyHook
from tidings.pipeline.processor import BatchProcessor
from tidings.settings import Settings
from tidings.store.tables_journeys import journey_entrances, journey_ready, journey_timers


def _delay_then_send(seconds: int = 60, campaign_id: int = 3, trigger: str = "none") -> dict:
    entry: dict[str, Any] = {"trigger": trigger}
    if trigger == "event":
        entry.update(event_name="Signed up")
    return {
        "in": {"type": "entrance", "data": entry, "children": [{"external_id": "later"}]},
        "later": {
            "type": "delay",
            "data": {"format": "duration", "duration": {"seconds": seconds}},
            "children": [{"external_id": "mail"}],
        },
        "mail": {"type": "action", "data": {"campaign_id": campaign_id}},
    }


def _count(services: Services, table: sa.Table) -> int:
    with services.db.reader.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def test_concurrent_triggers_enter_once(
    services: Services, project: Project, client: httpx.AsyncClient
) -> None:
    journey_id = await make_journey(client, project, _delay_then_send())
    body = {"user": {"external_id": "dup", "email": "dup@example.com"}}
    answers = await asyncio.gather(
        *[
            client.post(
                f"/api/client/journeys/{journey_id}/trigger", json=body, headers=bearer(project.sk)
            )
            for _ in range(8)
        ]
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert _count(services, journey_entrances) == 1
    assert _count(services, journey_timers) == 1


def test_concurrent_entering_transactions_make_one_entrance(
    services: Services, project: Project, backend: str
) -> None:
    """Two transactions enter the same user under the same key at the same time: the
    second waits on the first's unique key and then enters nothing (no check-then-insert
    could do that: both would see no entrance)."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: transactions cannot overlap")
    engine = services.journeys
    assert engine is not None
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO profiles (id, project_id, external_id, data, created_at, updated_at)"
                " VALUES ('prf_x', :p, 'x', '{}', 1, 1)"
            ),
            {"p": project.id},
        )
    journey_id = _make_live(services, project, _delay_then_send())
    with services.db.reader.connect() as conn:
        graph = engine.graphs.get(conn, journey_id)
    assert graph is not None
    entrance = graph.entrances()[0]
    results: list[Any] = []
    first_in = threading.Event()
    release = threading.Event()

    def enter(hold: bool) -> None:
        from tidings.journeys.state import Tx

        with services.db.writer.begin() as conn:
            profile = engine.load_profiles(conn, ["prf_x"])["prf_x"]
            results.append(engine.enter(conn, graph, entrance, profile, Tx(1), event=None))
            if hold:
                first_in.set()
                release.wait(10)

    a = threading.Thread(target=enter, args=(True,))
    a.start()
    assert first_in.wait(10)
    b = threading.Thread(target=enter, args=(False,))
    b.start()
    b.join(0.5)  # b is blocked on a's uncommitted row with the same unique key
    release.set()
    a.join(10)
    b.join(10)
    assert sorted(r is None for r in results) == [False, True]
    assert _count(services, journey_entrances) == 1


def _make_live(services: Services, project: Project, graph: dict[str, Any]) -> int:
    from tidings.domain.journeys import parse_steps

    store = services.journey_store
    assert store is not None
    row = store.create(project.id, name="J", description=None, tags=[], settings={}, now=1)
    store.put_steps(project.id, row.id, parse_steps(graph), now=2)
    store.update(project.id, row.id, now=3, values={}, status="live")
    return row.id


class _Crash(Exception):
    pass


class _CrashOnce:
    """A batch hook after the journeys' one that fails the first time: the batch (and
    what the journey hook did in it) rolls back, and the batch is applied again."""

    def __init__(self) -> None:
        self.crashed = False

    def apply(self, conn: Any, facts: Any, now: int) -> None:
        if not self.crashed:
            self.crashed = True
            raise _Crash


def test_a_batch_that_fails_after_entering_enters_once_when_replayed(
    services: Services, project: Project, sends: TableSends
) -> None:
    engine = services.journeys
    assert engine is not None
    _make_live(services, project, _delay_then_send(seconds=0, trigger="event"))
    crash = _CrashOnce()
    processor = BatchProcessor(
        services.db.processing_writer,
        services.db.reader,
        services.profiles,
        hooks=[JourneyHook(engine), crash],
    )
    record = LogRecord(
        seq=1,
        partition=0,
        project_id=project.id,
        kind="event",
        payload={"name": "Signed up", "external_id": "eve", "message_id": "m1", "data": {}},
        accepted_at=engine.clock(),
    )
    with pytest.raises(_Crash):
        processor.process([record], engine.clock())
    assert _count(services, journey_entrances) == 0
    processor.process([record], engine.clock())
    assert _count(services, journey_entrances) == 1
    engine.run_due()
    assert len(sends.rows(services.db.reader)) == 1


class _FailAfterEffect:
    """Sends that queue, then fail the transaction right after (a crash between a step's
    effect and its completion), once."""

    def __init__(self, inner: TableSends) -> None:
        self.inner = inner
        self.failed = False

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        result = self.inner.enqueue(conn, request, now)
        if not self.failed:
            self.failed = True
            raise _Crash("died after queueing the send, before the step completed")
        return result

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return self.inner.sent_count(conn, project_id, profile_id, since)


async def test_a_crash_between_effect_and_completion_never_repeats_a_send(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    journey_id = await make_journey(client, project, _delay_then_send(seconds=60))
    r = await client.post(
        f"/api/client/journeys/{journey_id}/trigger",
        json={"user": {"external_id": "kim"}},
        headers=bearer(project.sk),
    )
    assert r.status_code == 200, r.text
    engine = services.journeys
    assert engine is not None
    engine.sends = _FailAfterEffect(sends)
    clock.advance(61)
    # The delay fires (in bulk): the entrance is ready at the action step.
    assert engine.fire_due() == 1
    # The worker "dies" after the step queued its send, before the transaction commits.
    with pytest.raises(_Crash), services.db.writer.begin() as conn:
        engine._run_ready(conn, clock(), 500)
    assert sends.rows(services.db.reader) == []  # the send went with the step
    assert _count(services, journey_ready) == 1  # and the ready row is still there
    # The next worker (or the same after a restart) runs the step: one send, once.
    assert engine.run_due() == 1
    assert engine.run_due() == 0
    assert len(sends.rows(services.db.reader)) == 1
    path = (
        await client.get(f"/api/client/journeys/{journey_id}/users/kim", headers=bearer(project.sk))
    ).json()["results"][0]["path"]
    assert [(p["step_uuid"], p["outcome"]) for p in path] == [
        ("in", "entered"),
        ("later", "completed"),
        ("mail", "queued"),
    ]


async def test_timers_survive_a_restart(
    settings: Settings, sends: TableSends, clock: Clock, client: httpx.AsyncClient
) -> None:
    from tests.conftest import create_project
    from tidings.api.app import create_app

    first = journey_services(settings, sends, clock)
    first.journey_worker = None  # the test fires timers itself
    first.start()
    project = create_project(first)
    app = create_app(first, manage_lifecycle=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        journey_id = await make_journey(c, project, _delay_then_send(seconds=3600))
        r = await c.post(
            f"/api/client/journeys/{journey_id}/trigger",
            json={"user": {"external_id": "rex"}},
            headers=bearer(project.sk),
        )
        assert r.status_code == 200
    first.stop()  # the process ends with the timer pending
    second = journey_services(settings, sends, clock)
    worker = second.journey_worker
    second.journey_worker = None
    second.start()
    second.journey_worker = worker
    try:
        clock.advance(3600 + 1)
        assert await tick(second) == 2  # fired, then its action step ran
        assert len(sends.rows(second.db.reader)) == 1
    finally:
        second.journey_worker = None
        second.stop()


class _CountingSends:
    def __init__(self, inner: TableSends) -> None:
        self.inner = inner
        self.duplicates = 0
        self.lock = threading.Lock()

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        result = self.inner.enqueue(conn, request, now)
        if result is Enqueued.DUPLICATE:
            with self.lock:
                self.duplicates += 1
        return result

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return self.inner.sent_count(conn, project_id, profile_id, since)


async def test_two_workers_fire_each_timer_once_and_retake_a_dead_claim(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
    backend: str,
) -> None:
    if backend != "postgresql":
        pytest.skip("several workers claim timers side by side on PostgreSQL only")
    journey_id = await make_journey(client, project, _delay_then_send(seconds=60, trigger="event"))
    users = 300
    for start in range(0, users, 100):
        await send_events(
            client,
            project,
            [
                {"name": "Signed up", "external_id": f"u{i}", "data": {}}
                for i in range(start, start + 100)
            ],
        )
    await drain(services)
    assert _count(services, journey_timers) == users
    engine = services.journeys
    assert engine is not None
    counting = _CountingSends(sends)
    clock.advance(61)
    # A worker claims 50 timers and dies holding them (its transaction never commits).
    dying = services.db.writer.connect()
    tx = dying.begin()
    held = dying.execute(
        sa.select(journey_timers.c.id)
        .order_by(journey_timers.c.due_at)
        .limit(50)
        .with_for_update(skip_locked=True)
    ).all()
    assert len(held) == 50
    workers = [
        JourneyEngine(
            services.db.writer,
            services.db.reader,
            counting,
            partitions=services.log.partitions,
            clock=clock,
        )
        for _ in range(2)
    ]
    fired = [0, 0]

    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait()
        idle = 0
        while idle < 3:  # small bulk transactions, so that both workers take part
            n = workers[i].fire_due(limit=20) + workers[i].run_ready(limit=20)
            idle = 0 if n else idle + 1
            fired[i] += n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Each timer counts twice: fired in bulk, then its action step run from the ready queue.
    assert sum(fired) == 2 * (users - 50)  # the held ones were skipped, not waited for
    tx.rollback()  # the dead worker's claim goes
    dying.close()
    assert workers[0].run_due() == 2 * 50
    assert counting.duplicates == 0
    assert len(sends.rows(services.db.reader)) == users
    assert fired[0] > 0 and fired[1] > 0
    del journey_id
