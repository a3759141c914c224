"""Each step type and setting, run by the engine against a real database."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import (
    Clock,
    TableSends,
    make_journey,
    send_events,
    tick,
)
from tidings.bootstrap import Services


def _entry(children: list[str], **data: Any) -> dict[str, Any]:
    return {
        "type": "entrance",
        "data": {"trigger": "event", "event_name": "Joined", **data},
        "children": [{"external_id": c} for c in children],
    }


async def _events(client: httpx.AsyncClient, project: Project, user: str) -> list[dict]:
    r = await client.get(f"/api/client/users/{user}/events", headers=bearer(project.sk))
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def _user(client: httpx.AsyncClient, project: Project, user: str) -> dict:
    r = await client.get(f"/api/client/users/{user}", headers=bearer(project.sk))
    return r.json()


async def _path(client: httpx.AsyncClient, project: Project, journey_id: int, user: str) -> list:
    r = await client.get(
        f"/api/client/journeys/{journey_id}/users/{user}", headers=bearer(project.sk)
    )
    return r.json()["results"]


async def test_update_and_event_steps_go_through_the_log(
    services: Services, project: Project, client: httpx.AsyncClient
) -> None:
    graph = {
        "in": _entry(["up"]),
        "up": {
            "type": "update",
            "data": {"template": '{"tier": "{{ event.tier }}", "welcomed": true}'},
            "children": [{"external_id": "ev"}],
        },
        "ev": {
            "type": "event",
            "data": {"event_name": "Welcomed", "template": '{"tier": "{{ event.tier }}"}'},
        },
    }
    journey_id = await make_journey(client, project, graph)
    await send_events(
        client, project, [{"name": "Joined", "external_id": "una", "data": {"tier": "gold"}}]
    )
    await drain(services)
    await tick(services)
    user = await _user(client, project, "una")
    assert user["data"]["tier"] == "gold" and user["data"]["welcomed"] is True
    welcomed = [e for e in await _events(client, project, "una") if e["name"] == "Welcomed"]
    assert len(welcomed) == 1 and welcomed[0]["data"] == {"tier": "gold"}
    # Draining the outbox again appends nothing new; the message ids are stable anyway.
    await tick(services)
    assert len([e for e in await _events(client, project, "una") if e["name"] == "Welcomed"]) == 1
    assert journey_id


async def test_gate_on_events_link_and_exit(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends
) -> None:
    target = await make_journey(
        client,
        project,
        {
            "in": {
                "type": "entrance",
                "data": {"trigger": "none"},
                "children": [{"external_id": "m"}],
            },
            "m": {"type": "action", "data": {"campaign_id": 50}},
        },
    )
    rule = {
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "value": "Purchased",
        "operator": "and",
        "children": [],
    }
    graph = {
        "in": _entry(["gate"]),
        "gate": {
            "type": "gate",
            "data": {"rule": rule},
            "children": [
                {"external_id": "buyer", "path": "yes"},
                {"external_id": "other", "path": "no"},
            ],
        },
        "buyer": {"type": "link", "data": {"target_id": target}},
        "other": {"type": "exit", "data": {}},
    }
    journey_id = await make_journey(client, project, graph)
    await send_events(client, project, [{"name": "Purchased", "external_id": "vic"}])
    await drain(services)
    await send_events(
        client,
        project,
        [{"name": "Joined", "external_id": "vic"}, {"name": "Joined", "external_id": "wes"}],
    )
    await drain(services)
    await tick(services)
    assert [r.campaign_id for r in sends.rows(services.db.reader)] == [50]  # vic, linked
    vic = await _path(client, project, journey_id, "vic")
    assert [p["step_uuid"] for p in vic[0]["path"]] == ["in", "gate", "buyer"]
    wes = await _path(client, project, journey_id, "wes")
    assert [(p["step_uuid"], p["outcome"]) for p in wes[0]["path"]][-2:] == [
        ("gate", "no"),
        ("other", "completed"),
    ]
    assert len(await _path(client, project, target, "vic")) == 1


async def test_goal_is_reported_per_journey_and_branch(
    services: Services, project: Project, client: httpx.AsyncClient, clock: Clock
) -> None:
    graph = {
        "in": _entry(["split"]),
        "split": {
            "type": "experiment",
            "data": {},
            "children": [
                {"external_id": "a", "data": {"ratio": 1}},
                {"external_id": "b", "data": {"ratio": 1}},
            ],
        },
        "a": {"type": "action", "data": {"campaign_id": 1}},
        "b": {"type": "action", "data": {"campaign_id": 2}},
    }
    settings = {"goal": {"event_name": "Order placed", "within": {"days": 1}}}
    journey_id = await make_journey(client, project, graph, settings=settings)
    users = [f"g{i}" for i in range(20)]
    await send_events(client, project, [{"name": "Joined", "external_id": u} for u in users])
    await drain(services)
    await send_events(
        client, project, [{"name": "Order placed", "external_id": u} for u in users[:5]]
    )
    await drain(services)
    await tick(services)
    r = await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(project.sk))
    goal = r.json()["goal"]
    assert goal["entrances"] == 20 and goal["reached"] == 5
    branches = goal["branches"]
    assert sum(b["entrances"] for b in branches.values()) == 20
    assert sum(b["reached"] for b in branches.values()) == 5
    reached = [
        e for e in await _events(client, project, "g0") if e["name"] == "journey_goal_reached"
    ]
    assert len(reached) == 1 and reached[0]["data"]["journey_id"] == journey_id


async def test_max_entries_and_frequency_cap_across_journeys(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends
) -> None:
    other = await make_journey(
        client,
        project,
        {"in": _entry(["m"]), "m": {"type": "action", "data": {"campaign_id": 70}}},
    )
    graph = {
        "in": _entry(["m"], multiple=True, concurrent=True),
        "m": {"type": "action", "data": {"campaign_id": 71}},
    }
    settings = {
        "max_entries_per_user": 2,
        "frequency_cap": {"count": 2, "period": {"days": 1}},
    }
    capped = await make_journey(client, project, graph, settings=settings)
    for _ in range(4):
        await send_events(client, project, [{"name": "Joined", "external_id": "xia"}])
        await drain(services)
    # "other" sent once (campaign 70); "capped" entered twice (max 2), the second time the
    # cap (2 a day across journeys) was reached, so only one of its sends went.
    campaigns = sorted(r.campaign_id for r in sends.rows(services.db.reader))
    entrances = await _path(client, project, capped, "xia")
    assert len(entrances) == 2
    assert campaigns.count(70) == 1 and campaigns.count(71) == 1
    outcomes = sorted(e["path"][-1]["outcome"] for e in entrances)
    assert outcomes == ["frequency_capped", "queued"] or outcomes == ["queued", "frequency_capped"]
    assert other


async def test_holdout_users_send_nothing(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends
) -> None:
    graph = {"in": _entry(["m"]), "m": {"type": "action", "data": {"campaign_id": 9}}}
    journey_id = await make_journey(client, project, graph, settings={"holdout_percent": 100})
    await send_events(client, project, [{"name": "Joined", "external_id": "hal"}])
    await drain(services)
    assert sends.rows(services.db.reader) == []
    entrance = (await _path(client, project, journey_id, "hal"))[0]
    assert entrance["holdout"] is True and entrance["path"][-1]["outcome"] == "holdout"


async def test_list_entrance_and_list_wait(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    h = bearer(project.sk)
    vip = (
        await client.post("/api/client/lists", json={"name": "VIP", "type": "static"}, headers=h)
    ).json()["id"]
    churn = (
        await client.post("/api/client/lists", json={"name": "Churn", "type": "static"}, headers=h)
    ).json()["id"]
    graph = {
        "in": {
            "type": "entrance",
            "data": {"trigger": "list", "list_id": vip},
            "children": [{"external_id": "w"}],
        },
        "w": {
            "type": "wait",
            "data": {"list_id": churn, "change": "entered", "timeout": {"days": 7}},
            "children": [
                {"external_id": "save", "path": "yes"},
                {"external_id": "end", "path": "no"},
            ],
        },
        "save": {"type": "action", "data": {"campaign_id": 33}},
        "end": {"type": "exit", "data": {}},
    }
    journey_id = await make_journey(client, project, graph)
    await send_events(client, project, [{"name": "Seen", "external_id": "liv"}])
    await drain(services)
    r = await client.post(
        f"/api/client/lists/{vip}/users", json={"external_ids": ["liv"]}, headers=h
    )
    assert r.status_code == 200, r.text
    await tick(services)
    entrances = await _path(client, project, journey_id, "liv")
    assert len(entrances) == 1 and entrances[0]["state"] == "waiting"
    r = await client.post(
        f"/api/client/lists/{churn}/users", json={"external_ids": ["liv"]}, headers=h
    )
    await tick(services)
    assert [r.campaign_id for r in sends.rows(services.db.reader)] == [33]
    await tick(services)  # a change is handled once
    assert len(await _path(client, project, journey_id, "liv")) == 1


async def test_schedule_entrance_enters_the_list_each_occurrence(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    h = bearer(project.sk)
    members = (
        await client.post("/api/client/lists", json={"name": "All", "type": "static"}, headers=h)
    ).json()["id"]
    await send_events(client, project, [{"name": "Seen", "external_id": u} for u in ("s1", "s2")])
    await drain(services)
    await client.post(
        f"/api/client/lists/{members}/users",
        json={"external_ids": ["s1", "s2"]},
        headers=h,
    )
    graph = {
        "in": {
            "type": "entrance",
            "data": {
                "trigger": "schedule",
                "list_id": members,
                "schedule": "FREQ=HOURLY;BYMINUTE=0;BYSECOND=0",
            },
            "children": [{"external_id": "m"}],
        },
        "m": {"type": "action", "data": {"campaign_id": 8}},
    }
    await make_journey(client, project, graph)
    await tick(services)
    assert sends.rows(services.db.reader) == []  # no occurrence yet
    clock.advance(3600)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 2
    await tick(services)  # the same occurrence runs once
    assert len(sends.rows(services.db.reader)) == 2
    clock.advance(3600)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 4


async def test_simulate_answers_the_path_without_storing_or_sending(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends
) -> None:
    from tests.journeys.conftest import cart_graph

    journey_id = await make_journey(client, project, cart_graph(campaign_id=7, hours=4))
    h = bearer(project.sk)
    body = {
        "user": {"external_id": "sim", "timezone": "Europe/Paris"},
        "events": [
            {"name": "Cart updated", "data": {"cart_id": "k1"}, "at": 0},
            {"name": "Order placed", "data": {"cart_id": "other"}, "at": 3600},
        ],
    }
    r = await client.post(f"/api/client/journeys/{journey_id}/simulate", json=body, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [p["step_uuid"] for p in out["path"]] == ["entry", "wait", "remind", "bought"]
    assert [m["campaign_id"] for m in out["messages"]] == [7]
    body["events"][1]["data"]["cart_id"] = "k1"
    out = (
        await client.post(f"/api/client/journeys/{journey_id}/simulate", json=body, headers=h)
    ).json()
    assert [p["step_uuid"] for p in out["path"]] == ["entry", "wait", "bought"]
    assert out["messages"] == []
    assert sends.rows(services.db.reader) == []
    r = await client.get("/api/client/users/sim", headers=h)
    assert r.status_code == 404  # nothing stored
    r = await client.post(
        f"/api/client/journeys/{journey_id}/simulate",
        json={"external_id": "sim", "events": [{"at": 1}]},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["param"] == "events[0].name"


async def test_throttle_lets_the_rate_through_and_holds_the_rest(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    graph = {
        "in": _entry(["t"]),
        "t": {
            "type": "throttle",
            "data": {"rate_limit": 2, "rate_interval": "hour"},
            "children": [{"external_id": "m"}],
        },
        "m": {"type": "action", "data": {"campaign_id": 60}},
    }
    await make_journey(client, project, graph)
    await send_events(
        client, project, [{"name": "Joined", "external_id": f"t{i}"} for i in range(5)]
    )
    await drain(services)
    assert len(sends.rows(services.db.reader)) == 2  # this hour's two
    clock.advance(3600)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 4  # the next hour's two
    clock.advance(3600)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 5
