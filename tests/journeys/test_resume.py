"""A journey turned off stops advancing and resumes when turned back on: its waits end
then from what happened meanwhile. List entrances enter the users who join the list
while the journey is live: not those on it before it went live, nor those who joined
while it was off, and none missed however long the worker was away."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import Clock, TableSends, cart_graph, make_journey, send_events, tick
from tidings.bootstrap import Services

HOUR = 3600


async def _status(
    client: httpx.AsyncClient, project: Project, journey_id: int, status: str
) -> None:
    r = await client.patch(
        f"/api/client/journeys/{journey_id}", json={"status": status}, headers=bearer(project.sk)
    )
    assert r.status_code == 200, r.text


async def _paths(
    client: httpx.AsyncClient, project: Project, journey_id: int, user: str
) -> list[dict[str, Any]]:
    r = await client.get(
        f"/api/client/journeys/{journey_id}/users/{user}", headers=bearer(project.sk)
    )
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def _order(user: str, clock: Clock) -> dict[str, Any]:
    """``user`` orders cart ``user`` now, by the test's clock."""
    at = datetime.fromtimestamp(clock() / 1e6, tz=UTC).isoformat()
    return {
        "name": "Order placed",
        "external_id": user,
        "data": {"cart_id": user},
        "created_at": at,
    }


def _outcome(entrance: dict[str, Any], step: str) -> str | None:
    return next(p["outcome"] for p in entrance["path"] if p["step_uuid"] == step)


async def test_waits_end_on_resume_from_what_happened_while_off(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, cart_graph(campaign_id=7, hours=4))
    carts = {"ann": "c1", "bob": "c2", "cat": "c3"}
    await send_events(
        client,
        project,
        [
            {"name": "Cart updated", "external_id": u, "data": {"cart_id": c}}
            for u, c in carts.items()
        ],
    )
    await drain(services)
    await _status(client, project, journey_id, "off")
    # While off: ann orders her cart, bob another cart than his, cat nothing.
    await send_events(
        client,
        project,
        [
            {"name": "Order placed", "external_id": "ann", "data": {"cart_id": "c1"}},
            {"name": "Order placed", "external_id": "bob", "data": {"cart_id": "other"}},
        ],
    )
    await drain(services)
    await tick(services)
    for user in carts:  # an off journey does not advance
        assert (await _paths(client, project, journey_id, user))[0]["state"] == "waiting"
    await _status(client, project, journey_id, "live")
    await tick(services)  # ann's wait ends at once, on "yes"
    ann = (await _paths(client, project, journey_id, "ann"))[0]
    assert _outcome(ann, "wait") == "yes" and ann["state"] != "waiting"
    bob = (await _paths(client, project, journey_id, "bob"))[0]
    assert bob["state"] == "waiting"  # another cart's order does not end his wait
    assert sends.rows(services.db.reader) == []
    clock.advance(4 * HOUR + 1)
    await tick(services)  # bob and cat time out and get the reminder; ann does not
    sent = sorted(r.profile_id for r in sends.rows(services.db.reader))
    assert len(sent) == 2
    assert _outcome((await _paths(client, project, journey_id, "cat"))[0], "wait") == "no"


async def test_a_timeout_that_passed_while_off_counts_the_event_before_it(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, cart_graph(campaign_id=7, hours=4))
    await send_events(
        client,
        project,
        [
            {"name": "Cart updated", "external_id": u, "data": {"cart_id": u}}
            for u in ("dan", "eve", "fay")
        ],
    )
    await drain(services)
    await _status(client, project, journey_id, "off")
    clock.advance(HOUR)
    await send_events(client, project, [_order("dan", clock)])
    await drain(services)
    clock.advance(4 * HOUR)  # eve orders after her wait's timeout: too late
    await send_events(client, project, [_order("eve", clock)])
    await drain(services)
    await tick(services)
    await _status(client, project, journey_id, "live")
    await tick(services)
    outcomes = {
        u: _outcome((await _paths(client, project, journey_id, u))[0], "wait")
        for u in ("dan", "eve", "fay")
    }
    assert outcomes == {"dan": "yes", "eve": "no", "fay": "no"}
    assert len(sends.rows(services.db.reader)) == 2


async def test_a_list_wait_ends_on_resume_from_a_change_while_off(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    churn = (
        await client.post("/api/client/lists", json={"name": "Churn", "type": "static"}, headers=h)
    ).json()["id"]
    graph = {
        "in": {"type": "entrance", "data": {"trigger": "none"}, "children": [{"external_id": "w"}]},
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
    r = await client.post(
        f"/api/client/journeys/{journey_id}/trigger",
        json={"user": {"external_id": "gus"}},
        headers=h,
    )
    assert r.status_code == 200, r.text
    await _status(client, project, journey_id, "off")
    r = await client.post(
        f"/api/client/lists/{churn}/users", json={"external_ids": ["gus"]}, headers=h
    )
    assert r.status_code == 200, r.text
    await tick(services)
    assert sends.rows(services.db.reader) == []
    await _status(client, project, journey_id, "live")
    await tick(services)
    assert [r.campaign_id for r in sends.rows(services.db.reader)] == [33]


async def test_a_list_entrance_enters_those_who_join_while_it_is_live(
    services: Services, project: Project, client: httpx.AsyncClient, sends: TableSends, clock: Clock
) -> None:
    h = bearer(project.sk)
    vip = (
        await client.post("/api/client/lists", json={"name": "VIP", "type": "static"}, headers=h)
    ).json()["id"]
    graph = {
        "in": {
            "type": "entrance",
            "data": {"trigger": "list", "list_id": vip},
            "children": [{"external_id": "hi"}],
        },
        "hi": {"type": "action", "data": {"campaign_id": 9}},
    }
    await send_events(
        client,
        project,
        [{"name": "Seen", "external_id": u} for u in ("ida", "jon", "kay", "lea", "max")],
    )
    await drain(services)

    async def join(user: str) -> None:
        r = await client.post(
            f"/api/client/lists/{vip}/users", json={"external_ids": [user]}, headers=h
        )
        assert r.status_code == 200, r.text

    await join("ida")  # on the list before the journey goes live: not entered
    clock.advance(1)
    journey_id = await make_journey(client, project, graph)
    clock.advance(1)
    await join("jon")
    await tick(services)
    await _status(client, project, journey_id, "off")
    clock.advance(1)
    await join("kay")  # joins while the journey is off: not entered, then or later
    await tick(services)
    await _status(client, project, journey_id, "live")
    clock.advance(1)
    await tick(services)
    # The worker is away for two days; lea joined as it left: she is entered all the same.
    await join("lea")
    clock.advance(2 * 24 * HOUR)
    await tick(services)
    entered = {
        u: len(await _paths(client, project, journey_id, u)) for u in ("ida", "jon", "kay", "lea")
    }
    assert entered == {"ida": 0, "jon": 1, "kay": 0, "lea": 1}
    assert len(sends.rows(services.db.reader)) == 2
