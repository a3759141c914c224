"""The abandoned-cart journey end to end, on SQLite and PostgreSQL: entered on "Cart
updated" keyed by cart id, waits for "Order placed" with the same cart id, else sends."""

from __future__ import annotations

import httpx

from tests.conftest import Project, bearer, drain
from tests.journeys.conftest import (
    Clock,
    TableSends,
    cart_graph,
    make_journey,
    send_events,
    tick,
)
from tidings.bootstrap import Services


async def _path(client: httpx.AsyncClient, project: Project, journey_id: int, user: str) -> list:
    r = await client.get(
        f"/api/client/journeys/{journey_id}/users/{user}", headers=bearer(project.sk)
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def test_abandoned_cart_sends_only_for_carts_not_ordered(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    sends: TableSends,
    clock: Clock,
) -> None:
    journey_id = await make_journey(client, project, cart_graph(campaign_id=7, hours=4))
    await send_events(
        client,
        project,
        [
            {"name": "Cart updated", "external_id": "ann", "data": {"cart_id": "c1"}},
            {"name": "Cart updated", "external_id": "ann", "data": {"cart_id": "c1"}},  # same cart
            {"name": "Cart updated", "external_id": "bob", "data": {"cart_id": "c2"}},
            {"name": "Cart updated", "external_id": "bob", "data": {"cart_id": "c3"}},
        ],
    )
    await drain(services)
    # bob orders cart c2 (not c3): only c2's wait ends on the yes path.
    await send_events(
        client,
        project,
        [{"name": "Order placed", "external_id": "bob", "data": {"cart_id": "c2"}}],
    )
    await drain(services)
    clock.advance(3 * 3600)
    await tick(services)
    assert sends.rows(services.db.reader) == []  # nobody timed out yet
    clock.advance(3600 + 5)
    await tick(services)
    rows = sends.rows(services.db.reader)
    assert sorted((r.campaign_id, r.context["event"]["cart_id"]) for r in rows) == [
        (7, "c1"),
        (7, "c3"),
    ]
    assert all(r.reference.startswith("journey:") for r in rows)
    ann = await _path(client, project, journey_id, "ann")
    assert len(ann) == 1  # one entrance for one cart, however often it is updated
    assert [p["step_uuid"] for p in ann[0]["path"]] == ["entry", "wait", "remind", "bought"]
    assert ann[0]["path"][1]["outcome"] == "no"
    assert ann[0]["path"][2]["outcome"] == "queued"
    bob = await _path(client, project, journey_id, "bob")
    by_key = {e["entrance_key"]: e for e in bob}
    assert [p["outcome"] for p in by_key["c2"]["path"]][:2] == ["entered", "yes"]
    assert [p["step_uuid"] for p in by_key["c2"]["path"]] == ["entry", "wait", "bought"]
    assert by_key["c3"]["path"][1]["outcome"] == "no"
    # More ticks send nothing more.
    clock.advance(86400)
    await tick(services)
    assert len(sends.rows(services.db.reader)) == 2
    r = await client.get(f"/api/client/journeys/{journey_id}", headers=bearer(project.sk))
    stats = r.json()["stats"]
    assert stats["entry"]["entered"] == 3
    assert stats["remind"]["completed"] == 2
    assert stats["wait"]["waiting"] == 0
    assert r.json()["stats_at"]


async def test_facts_are_recorded_as_events(
    services: Services, project: Project, client: httpx.AsyncClient, clock: Clock
) -> None:
    journey_id = await make_journey(client, project, cart_graph(hours=1))
    await send_events(
        client, project, [{"name": "Cart updated", "external_id": "cy", "data": {"cart_id": "x"}}]
    )
    await drain(services)
    clock.advance(3601)
    await tick(services)
    r = await client.get("/api/client/users/cy/events", headers=bearer(project.sk))
    assert r.status_code == 200, r.text
    names = [e["name"] for e in r.json()["results"]]
    assert "journey_entered" in names and "journey_completed" in names
    entered = next(e for e in r.json()["results"] if e["name"] == "journey_entered")
    assert entered["data"]["journey_id"] == journey_id
    assert entered["data"]["entrance_id"]
