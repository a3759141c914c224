"""Journeys through their life: publish with validation, pause and resume, edit while
live, archive, delete; trigger rules; merges; the Python SDK's trigger_journey."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import (
    Clock,
    TableSends,
    make_journey,
    send_events,
    tick,
)
from tidings.bootstrap import Services
from tidings.domain.auth import Role


def _welcome(delay_seconds: int = 60) -> dict[str, Any]:
    return {
        "in": {"type": "entrance", "data": {"trigger": "none"}, "children": [{"external_id": "a"}]},
        "a": {
            "type": "delay",
            "data": {"format": "duration", "duration": {"seconds": delay_seconds}},
            "children": [{"external_id": "b"}],
        },
        "b": {"type": "action", "data": {"campaign_id": 1}, "children": [{"external_id": "c"}]},
        "c": {
            "type": "delay",
            "data": {"format": "duration", "duration": {"days": 2}},
            "children": [{"external_id": "d"}],
        },
        "d": {"type": "action", "data": {"campaign_id": 2}},
    }


async def _trigger(client: httpx.AsyncClient, project: Project, journey_id: int, user: str):
    return await client.post(
        f"/api/client/journeys/{journey_id}/trigger",
        json={"user": {"external_id": user}},
        headers=bearer(project.sk),
    )


async def test_crud_and_steps_round_trip(client: httpx.AsyncClient, project: Project) -> None:
    h = bearer(project.sk)
    r = await client.post(
        "/api/client/journeys", json={"name": "Welcome", "tags": ["a"]}, headers=h
    )
    assert r.status_code == 201
    j = r.json()
    assert j["status"] == "draft" and j["name"] == "Welcome" and j["tags"] == ["a"]
    r = await client.put(f"/api/client/journeys/{j['id']}/steps", json=_welcome(), headers=h)
    assert r.status_code == 200, r.text
    steps = r.json()
    assert set(steps) == {"in", "a", "b", "c", "d"}
    assert all(isinstance(s["id"], int) for s in steps.values())
    ids = {u: s["id"] for u, s in steps.items()}
    # Putting it again keeps each step's id (matched by uuid).
    r = await client.put(f"/api/client/journeys/{j['id']}/steps", json=_welcome(), headers=h)
    assert {u: s["id"] for u, s in r.json().items()} == ids
    r = await client.get(f"/api/client/journeys/{j['id']}/steps", headers=h)
    assert r.json()["a"]["data"]["duration"] == {"seconds": 60}
    assert r.json()["in"]["children"] == [{"external_id": "a"}]
    r = await client.get("/api/client/journeys", headers=h)
    assert [x["id"] for x in r.json()["results"]] == [j["id"]]
    r = await client.patch(f"/api/client/journeys/{j['id']}", json={"name": "W2"}, headers=h)
    assert r.json()["name"] == "W2"
    r = await client.delete(f"/api/client/journeys/{j['id']}", headers=h)
    assert r.status_code == 204
    r = await client.get(f"/api/client/journeys/{j['id']}", headers=h)
    assert r.status_code == 404


async def test_publishing_an_invalid_graph_names_the_step(
    client: httpx.AsyncClient, project: Project
) -> None:
    h = bearer(project.sk)
    graph = _welcome()
    del graph["b"]["data"]["campaign_id"]
    graph["a"]["data"]["duration"] = {"weeks": 1}
    journey_id = await make_journey(client, project, graph, live=False)
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=h)
    assert r.status_code == 422, r.text
    params = {e["param"] for e in r.json()["errors"]}
    assert "b.data.campaign_id" in params
    assert "a.data.duration.weeks" in params
    r = await client.get(f"/api/client/journeys/{journey_id}", headers=h)
    assert r.json()["status"] == "draft"  # nothing half-written


async def test_bad_graphs_are_refused_with_the_envelope(
    client: httpx.AsyncClient, project: Project
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _welcome(), live=False)
    for body, status, param in [
        ([1, 2], 400, "body"),
        ({"x": {"type": "teleport"}}, 422, "x.type"),
        (
            {"x": {"type": "delay", "children": [{"external_id": "nowhere"}]}},
            422,
            "x.children[0].external_id",
        ),
    ]:
        r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=body, headers=h)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert param in {e["param"] for e in r.json().get("errors", [])} | {r.json().get("param")}
    r = await client.get(f"/api/client/journeys/{journey_id}/steps", headers=h)
    assert set(r.json()) == {"in", "a", "b", "c", "d"}  # unchanged
    cyclic = _welcome()
    cyclic["d"]["children"] = [{"external_id": "a"}]
    await client.put(f"/api/client/journeys/{journey_id}/steps", json=cyclic, headers=h)
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "cycle"


async def test_roles_for_writes_and_going_live(
    client: httpx.AsyncClient, project: Project, services: Services
) -> None:
    editor = services.projects.create_key(project.id, _secret(), role=Role.EDITOR).key
    support = services.projects.create_key(project.id, _secret(), role=Role.SUPPORT).key
    r = await client.post("/api/client/journeys", json={"name": "x"}, headers=bearer(support))
    assert r.status_code == 403
    journey_id = await make_journey(client, project, _welcome(), live=False)
    r = await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(support))
    assert r.status_code == 200
    r = await client.patch(
        f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=bearer(editor)
    )
    assert r.status_code == 403
    r = await client.patch(
        f"/api/client/journeys/{journey_id}", json={"name": "y"}, headers=bearer(editor)
    )
    assert r.status_code == 200


def _secret():  # type: ignore[no-untyped-def]
    from tidings.domain.auth import Scope

    return Scope.SECRET


async def test_trigger_a_journey_that_is_not_live_is_a_conflict(
    client: httpx.AsyncClient, project: Project
) -> None:
    journey_id = await make_journey(client, project, _welcome(), live=False)
    r = await _trigger(client, project, journey_id, "zed")
    assert r.status_code == 409 and r.json()["code"] == "state_conflict"
    r = await client.post(
        f"/api/client/journeys/{journey_id}/trigger", json={"user": {}}, headers=bearer(project.sk)
    )
    assert r.status_code == 400
    r = await _trigger(client, project, 999999, "zed")
    assert r.status_code == 404


async def test_off_stops_advancing_and_live_resumes(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _welcome(60))
    assert (await _trigger(client, project, journey_id, "olga")).status_code == 200
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "off"}, headers=h)
    assert r.json()["status"] == "off"
    assert (await _trigger(client, project, journey_id, "pete")).status_code == 409
    clock.advance(120)
    await tick(services)
    assert sends.rows(services.db.reader) == []  # paused: the due delay did not fire
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=h)
    assert r.json()["status"] == "live"
    await tick(services)
    assert [r.campaign_id for r in sends.rows(services.db.reader)] == [1]


async def test_editing_a_live_journey_moves_users_off_removed_steps(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _welcome(60))
    for user in ("u1", "u2"):
        assert (await _trigger(client, project, journey_id, user)).status_code == 200
    clock.advance(61)
    await tick(services)  # both got campaign 1 and wait at "c" (two days)
    assert len(sends.rows(services.db.reader)) == 2
    edited = _welcome(60)
    del edited["c"]  # the two-day delay goes: its users move to its child "d"
    edited["b"]["children"] = [{"external_id": "d"}]
    edited["d"]["data"]["campaign_id"] = 5
    r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=edited, headers=h)
    assert r.status_code == 200, r.text
    await tick(services)
    assert sorted(r.campaign_id for r in sends.rows(services.db.reader)) == [1, 1, 5, 5]
    path = (await client.get(f"/api/client/journeys/{journey_id}/users/u1", headers=h)).json()
    steps = [(p["step_uuid"], p["outcome"]) for p in path["results"][0]["path"]]
    assert ("c", "step_removed") in steps and steps[-1] == ("d", "queued")
    # An edit that breaks a live journey is refused, and changes nothing.
    broken = dict(edited)
    broken["b"] = {**edited["b"], "data": {}}
    r = await client.put(f"/api/client/journeys/{journey_id}/steps", json=broken, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["param"] == "b.data.campaign_id"


async def test_archive_turns_a_journey_off(client: httpx.AsyncClient, project: Project) -> None:
    h = bearer(project.sk)
    journey_id = await make_journey(client, project, _welcome())
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"archived": True}, headers=h)
    assert r.json()["archived"] is True and r.json()["status"] == "off"
    r = await client.patch(f"/api/client/journeys/{journey_id}", json={"status": "live"}, headers=h)
    assert r.status_code == 409


async def test_a_merge_leaves_the_person_one_entrance(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    graph = {
        "in": {
            "type": "entrance",
            "data": {"trigger": "event", "event_name": "Visited"},
            "children": [{"external_id": "wait"}],
        },
        "wait": {
            "type": "delay",
            "data": {"duration": {"hours": 1}},
            "children": [{"external_id": "mail"}],
        },
        "mail": {"type": "action", "data": {"campaign_id": 4}},
    }
    journey_id = await make_journey(client, project, graph)
    await send_events(client, project, [{"name": "Visited", "anonymous_id": "anon-1"}])
    await send_events(client, project, [{"name": "Visited", "external_id": "mia"}])
    await drain(services)
    r = await client.post(
        "/api/client/alias",
        json={"anonymous_id": "anon-1", "external_id": "mia"},
        headers=bearer(project.pk),
    )
    assert r.status_code in (200, 202, 204), r.text
    await drain(services)
    clock.advance(3601)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 1
    r = await client.get(f"/api/client/journeys/{journey_id}/users/mia", headers=bearer(project.sk))
    states = sorted(e["state"] for e in r.json()["results"])
    assert states == ["done", "merged"]


async def test_the_python_sdk_triggers_a_journey(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    from tidings_client import AsyncClient, ConflictError

    journey_id = await make_journey(client, project, _welcome(0), live=False)
    transport = client._transport  # the same in-process app
    sdk = AsyncClient(project.sk, base_url="http://tidings.test", transport=transport)
    try:
        with pytest.raises(ConflictError):
            await sdk.trigger_journey(journey_id, external_id="sid")
        await client.patch(
            f"/api/client/journeys/{journey_id}",
            json={"status": "live"},
            headers=bearer(project.sk),
        )
        await sdk.trigger_journey(
            journey_id,
            external_id="sid",
            email="sid@example.com",
            traits={"plan": "pro"},
            event={"source": "sdk"},
        )
    finally:
        await sdk.aclose()
    assert [r.campaign_id for r in sends.rows(services.db.reader)] == [1]
    r = await client.get("/api/client/users/sid", headers=bearer(project.sk))
    assert r.json()["email"] == "sid@example.com" and r.json()["data"]["plan"] == "pro"


async def test_the_worker_thread_fires_due_timers_by_itself(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends
) -> None:
    """What ``tidings serve`` and ``tidings worker`` run: no one calls it, it fires."""
    import asyncio

    journey_id = await make_journey(client, project, _welcome(1))
    worker = services.journey_worker
    assert worker is not None
    worker.start()
    try:
        assert (await _trigger(client, project, journey_id, "auto")).status_code == 200
        for _ in range(200):  # bounded: at most 10 s
            if sends.rows(services.db.reader):
                break
            await asyncio.sleep(0.05)
        assert [r.campaign_id for r in sends.rows(services.db.reader)] == [1]
    finally:
        worker.stop()


async def test_erasing_a_user_removes_their_entrances(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    journey_id = await make_journey(client, project, _welcome(60))
    assert (await _trigger(client, project, journey_id, "gdpr")).status_code == 200
    r = await client.delete("/api/client/users/gdpr", headers=bearer(project.sk))
    assert r.status_code == 204, r.text
    clock.advance(61)
    await tick(services)
    assert sends.rows(services.db.reader) == []
    r = await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(project.sk))
    assert r.json()["stats"]["a"]["waiting"] == 0
