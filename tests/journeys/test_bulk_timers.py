"""Due delays fire in bulk (one transaction per journey and delay step), and the ready
queue runs their next steps: each timer fires once, a firing that dies fires nothing and
is taken again, a fired entrance whose next step is another delay waits for it, an
entrance that left the delay is not moved, and an edit of a live delay re-decides it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import Clock, TableSends, make_journey, tick
from tidings.bootstrap import Services
from tidings.journeys.engine import JourneyEngine
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_ready,
    journey_steps,
    journey_timers,
)

USERS = 30


def _graph(*delays: int, campaign_id: int = 4) -> dict[str, Any]:
    """An entrance, delays of these many seconds one after the other, then a send."""
    names = [f"d{i}" for i in range(len(delays))] + ["mail"]
    graph: dict[str, Any] = {
        "in": {
            "type": "entrance",
            "data": {"trigger": "none"},
            "children": [{"external_id": names[0]}],
        },
        "mail": {"type": "action", "data": {"campaign_id": campaign_id}},
    }
    for i, seconds in enumerate(delays):
        graph[names[i]] = {
            "type": "delay",
            "data": {"format": "duration", "duration": {"seconds": seconds}},
            "children": [{"external_id": names[i + 1]}],
        }
    return graph


async def _enter(client: httpx.AsyncClient, project: Project, journey_id: int, n: int) -> None:
    for i in range(n):
        r = await client.post(
            f"/api/client/journeys/{journey_id}/trigger",
            json={"user": {"external_id": f"b{i}"}},
            headers=bearer(project.sk),
        )
        assert r.status_code == 200, r.text


def _engine(services: Services) -> JourneyEngine:
    engine = services.journeys
    assert engine is not None
    return engine


def _timers(services: Services) -> list[tuple[str, str]]:
    """(kind, step uuid) of every timer, and ("ready", the delay's uuid) of every fired
    delay waiting in the ready queue."""
    with services.db.reader.connect() as conn:
        timers = list(
            conn.execute(
                sa.select(journey_timers.c.kind, journey_steps.c.uuid).join(
                    journey_steps, journey_steps.c.id == journey_timers.c.step_id
                )
            )
        )
        ready = list(
            conn.execute(
                sa.select(sa.literal("ready"), journey_steps.c.uuid)
                .select_from(journey_ready)
                .join(journey_steps, journey_steps.c.id == journey_ready.c.step_id)
            )
        )
        return sorted((kind, uuid) for kind, uuid in timers + ready)


async def test_due_delays_fire_in_bulk_then_the_next_step_runs_once(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, USERS)
    engine = _engine(services)
    assert engine.fire_due() == 0  # not due yet
    clock.advance(61)
    assert engine.fire_due() == USERS
    # Fired: the delay is complete, each entrance is ready at the send, nothing sent yet.
    assert _timers(services) == [("ready", "d0")] * USERS
    assert sends.rows(services.db.reader) == []
    stats = (
        await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(project.sk))
    ).json()["stats"]
    assert stats["d0"]["completed"] == USERS and stats["mail"]["entered"] == USERS
    assert stats["d0"]["waiting"] == 0 and stats["mail"]["waiting"] == USERS
    # One user's path reads as it will be written when the send runs: the delay
    # completed at the firing, the send entered then.
    path = (
        await client.get(f"/api/client/journeys/{journey_id}/users/b0", headers=bearer(project.sk))
    ).json()["results"][0]["path"]
    assert [(p["step_uuid"], p["outcome"]) for p in path] == [
        ("in", "entered"),
        ("d0", "completed"),
        ("mail", None),
    ]
    fired = path[1]["completed_at"]
    assert fired is not None and path[2]["entered_at"] == fired
    clock.advance(5)  # the ready queue runs the sends five seconds after the firing
    assert engine.fire_due() == 0  # nothing fires twice
    assert engine.run_ready() == USERS
    assert engine.run_ready() == 0
    assert len(sends.rows(services.db.reader)) == USERS
    assert _timers(services) == []
    path = (
        await client.get(f"/api/client/journeys/{journey_id}/users/b0", headers=bearer(project.sk))
    ).json()["results"][0]["path"]
    assert [(p["step_uuid"], p["outcome"]) for p in path] == [
        ("in", "entered"),
        ("d0", "completed"),
        ("mail", "queued"),
    ]
    assert path[1]["completed_at"] == path[2]["entered_at"] == fired  # as of the firing
    ran = datetime.fromisoformat(path[2]["completed_at"])
    assert (ran - datetime.fromisoformat(fired)).total_seconds() >= 5


class _Died(Exception):
    pass


async def test_a_firing_that_dies_fires_nothing_and_is_taken_again(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, USERS)
    engine = _engine(services)
    clock.advance(61)
    graph = engine.graphs.get(services.db.reader.connect(), journey_id)
    assert graph is not None
    delay, mail = graph.steps["d0"].id, graph.steps["mail"].id
    # The worker dies after its statements ran, before the commit.
    with pytest.raises(_Died), services.db.writer.begin() as conn:
        assert engine._fire_group(conn, graph, delay, mail, clock(), 5000) == USERS
        raise _Died
    assert _timers(services) == [("run", "d0")] * USERS  # none lost
    assert engine.fire_due() == USERS
    await tick(services)
    assert len(sends.rows(services.db.reader)) == USERS


async def test_a_delay_after_a_fired_delay_waits_its_own_time(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60, 60))
    await _enter(client, project, journey_id, 3)
    clock.advance(61)
    await tick(services)
    assert _timers(services) == [("run", "d1")] * 3
    assert sends.rows(services.db.reader) == []  # the second delay is not fired with the first
    clock.advance(61)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 3


def _first_one_leaves(services: Services) -> None:
    """The first entrance left the journey (its state set as an exit step sets it)."""
    with services.db.writer.begin() as conn:
        first = conn.execute(sa.select(sa.func.min(journey_entrances.c.id))).scalar_one()
        conn.execute(
            sa.update(journey_entrances)
            .where(journey_entrances.c.id == first)
            .values(state="exited")
        )


async def test_an_entrance_that_left_the_delay_is_not_fired(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 2)
    _first_one_leaves(services)  # as an exit step does
    clock.advance(61)
    assert _engine(services).fire_due() == 2  # both claimed: one fired, one dropped
    assert _timers(services) == [("ready", "d0")]
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 1


async def test_editing_a_live_delay_decides_its_waiting_users_again(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _graph(3600))
    await _enter(client, project, journey_id, 2)
    r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=_graph(60), headers=h)
    assert r.status_code == 200, r.text
    await tick(services)  # decided again at once: due 60 s after they arrived
    assert _timers(services) == [("run", "d0")] * 2
    clock.advance(61)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 2
    # Longer: those waiting now wait the new time from their arrival.
    await _enter(client, project, journey_id, 3)  # b0..b2: b2 is new (b0, b1 are done)
    r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=_graph(7200), headers=h)
    assert r.status_code == 200, r.text
    clock.advance(3601)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 2
    clock.advance(3600)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 3


async def test_a_fired_delay_waits_while_its_journey_is_off(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 3)
    engine = _engine(services)
    clock.advance(61)
    assert engine.fire_due() == 3
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "off"}, headers=h)
    assert r.json()["status"] == "off"
    assert engine.run_ready() == 0  # off: the fired entrances wait in the ready queue
    assert sends.rows(services.db.reader) == []
    assert _timers(services) == [("ready", "d0")] * 3
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=h)
    assert engine.run_ready() == 3
    assert len(sends.rows(services.db.reader)) == 3 and _timers(services) == []


async def test_a_fired_entrance_that_left_before_its_next_step_is_dropped(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 2)
    engine = _engine(services)
    clock.advance(61)
    assert engine.fire_due() == 2
    _first_one_leaves(services)  # after the firing
    stats = (
        await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(project.sk))
    ).json()["stats"]
    assert stats["mail"]["waiting"] == 1 and stats["d0"]["waiting"] == 0  # one left
    assert engine.run_ready() == 2  # both rows taken: one ran, one dropped
    assert len(sends.rows(services.db.reader)) == 1 and _timers(services) == []


async def test_a_fired_delay_whose_next_step_an_edit_removed_ends_there(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 1)
    engine = _engine(services)
    clock.advance(61)
    assert engine.fire_due() == 1
    edited = _graph(60)
    del edited["mail"]  # the delay is now the journey's last step
    edited["d0"]["children"] = []
    r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=edited, headers=h)
    assert r.status_code == 200, r.text
    assert engine.run_ready() == 1
    assert sends.rows(services.db.reader) == []
    entrance = (await client.get(f"/api/client/journeys/{journey_id}/users/b0", headers=h)).json()[
        "results"
    ][0]
    assert entrance["state"] == "done"
    assert [(p["step_uuid"], p["outcome"]) for p in entrance["path"]] == [
        ("in", "entered"),
        ("d0", "completed"),
    ]


async def test_an_erased_user_leaves_no_fired_delay_behind(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 2)
    engine = _engine(services)
    clock.advance(61)
    assert engine.fire_due() == 2
    r = await client.delete("/api/client/users/b0", headers=bearer(project.sk))
    assert r.status_code == 204, r.text
    await drain(services)  # the erasure is applied: b0's ready row goes with its entrance
    assert _timers(services) == [("ready", "d0")]
    await tick(services)  # and the other user's send runs
    assert _timers(services) == []
    assert len(sends.rows(services.db.reader)) == 1
    del journey_id


class _Refuses:
    """Sends that raise for one profile (a bug, say), and work for everyone else."""

    def __init__(self, inner: TableSends, profile_id: str) -> None:
        self.inner, self.profile_id = inner, profile_id

    def enqueue(self, conn: Any, request: Any, now: int) -> Any:
        if request.profile_id == self.profile_id:
            raise RuntimeError("cannot send to this one")
        return self.inner.enqueue(conn, request, now)

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return self.inner.sent_count(conn, project_id, profile_id, since)


async def test_a_fired_entrance_whose_next_step_fails_does_not_hold_up_the_rest(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _graph(60))
    await _enter(client, project, journey_id, 3)
    with services.db.reader.connect() as conn:
        b1 = conn.execute(
            sa.select(journey_entrances.c.profile_id)
            .order_by(journey_entrances.c.id)
            .offset(1)
            .limit(1)
        ).scalar_one()
    engine = _engine(services)
    engine.sends = _Refuses(sends, b1)  # type: ignore[assignment]
    clock.advance(61)
    assert engine.fire_due() == 3
    engine.run_ready()  # the batch fails; one by one, the failing one is set aside
    assert len(sends.rows(services.db.reader)) == 2 and _timers(services) == []
    entrance = (await client.get(f"/api/client/journeys/{journey_id}/users/b1", headers=h)).json()[
        "results"
    ][0]
    assert entrance["state"] == "failed"
    stats = (await client.get(f"/api/client/journeys/{journey_id}", headers=h)).json()["stats"]
    assert stats["mail"]["failed"] == 1 and stats["d0"]["failed"] == 0
