"""Back-fill: a dynamic list created or edited after the data exists is computed over all
history by the worker, in chunks, with progress; it ends with what processing the same
data in real time gives, and records facts only for real differences."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tests.segments.test_realtime import (
    DAY,
    LISTS,
    ORDERS,
    PRO,
    T0,
    create_list,
    facts,
    fire_timers,
    get_list,
    identify,
    iso,
    members,
    timers,
    until_ready,
    use_clock,
    users_count,
)
from tidings.bootstrap import Services
from tidings.segments.backfill import Backfill
from tidings.store.tables import profiles

# Frequent buyers, or pro users who ever viewed the pricing page, but not anyone who asked
# for a refund in the last 14 days: windows of two lengths, a trait, an event filter.
MIXED: dict[str, Any] = {
    "type": "wrapper",
    "group": "parent",
    "operator": "and",
    "children": [
        {
            "type": "wrapper",
            "group": "parent",
            "operator": "or",
            "children": [
                ORDERS,
                {
                    "type": "wrapper",
                    "group": "parent",
                    "operator": "and",
                    "children": [
                        PRO["children"][0],
                        {
                            "type": "wrapper",
                            "group": "event",
                            "path": "name",
                            "value": "Page viewed",
                            "operator": "and",
                            "children": [
                                {
                                    "type": "string",
                                    "group": "event",
                                    "path": "data.page",
                                    "operator": "=",
                                    "value": "pricing",
                                }
                            ],
                        },
                    ],
                },
            ],
        },
        {
            "type": "wrapper",
            "group": "parent",
            "operator": "none",
            "children": [
                {
                    "type": "wrapper",
                    "group": "event",
                    "path": "name",
                    "value": "Refund requested",
                    "operator": "and",
                    "children": [],
                    "frequency": {
                        "period": {"type": "rolling", "unit": "day", "value": 14},
                        "operator": ">=",
                        "count": 1,
                    },
                }
            ],
        },
    ],
}


def backfill(services: Services) -> Backfill:
    assert services.segments is not None
    return services.segments.backfill


def pause_worker_segments(services: Services) -> None:
    """Timers and back-fills run only when the test steps them."""
    assert services.consumer is not None
    services.consumer.timers = None


async def step(services: Services, now: int = T0) -> bool:
    return await asyncio.to_thread(backfill(services).step, now)


async def seed(client: httpx.AsyncClient, project: Project, users: int, seed: int = 7) -> None:
    """Users with orders (some dated ahead), page views, refunds and plans."""
    rng = random.Random(seed)
    batch: list[dict[str, Any]] = []
    for n in range(users):
        user = f"user-{n:03d}"
        for _ in range(rng.randint(0, 6)):
            at = T0 - rng.randint(-3, 45) * DAY - rng.randint(0, 86_399) * 1_000_000
            batch.append({"name": "Order placed", "external_id": user, "created_at": iso(at)})
        if rng.random() < 0.4:
            page = rng.choice(["pricing", "home"])
            at = T0 - rng.randint(0, 400) * DAY
            batch.append(
                {
                    "name": "Page viewed",
                    "external_id": user,
                    "created_at": iso(at),
                    "data": {"page": page},
                }
            )
        if rng.random() < 0.2:
            at = T0 - rng.randint(0, 20) * DAY
            batch.append({"name": "Refund requested", "external_id": user, "created_at": iso(at)})
        batch.append({"name": "Signed up", "external_id": user, "created_at": iso(T0 - 400 * DAY)})
    for start in range(0, len(batch), 100):
        response = await client.post(
            "/api/client/events", json=batch[start : start + 100], headers=bearer(project.pk)
        )
        assert response.status_code == 204, response.text
    for n in range(users):
        plan = rng.choice(["pro", "free", None])
        if plan is not None:
            await identify(client, project, f"user-{n:03d}", plan=plan)


async def test_a_backfill_matches_real_time_processing_of_the_same_data(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    clock = use_clock(services)
    live = (await create_list(client, project, MIXED, "In real time"))["id"]
    await until_ready(client, services, project, live)
    await seed(client, project, 60)
    await drain(services)
    expected = members(services, live)
    assert 5 < len(expected) < 55  # the data select some, not all

    pause_worker_segments(services)
    backfill(services).chunk = 7
    later = (await create_list(client, project, MIXED, "Back-filled"))["id"]
    body = await get_list(client, project, later)
    assert body["state"] == "loading" and body["progress"] == {"done": 0, "total": None}
    assert await step(services)  # counts the users
    seen = [(await get_list(client, project, later))["progress"]]
    while (await get_list(client, project, later))["state"] == "loading":
        assert await step(services)
        body = await get_list(client, project, later)
        seen.append(body.get("progress"))
    assert seen[0] == {"done": 0, "total": 60}
    assert seen[1:-1] == [{"done": 7 * n, "total": 60} for n in range(1, 9)]
    assert seen[-1] is None and body["state"] == "ready" and body["users_count"] == len(expected)
    assert not await step(services)  # nothing left to load

    assert members(services, later) == expected
    assert timers(services, later) == timers(services, live)  # the same instants
    assert sorted(f[0] for f in facts(services, later)) == sorted(expected)
    assert {f[1:] for f in facts(services, later)} == {("entered", 1, T0)}

    # And both lists keep agreeing as the clock runs.
    assert services.consumer is not None and services.segments is not None
    services.consumer.timers = services.segments.tick
    for instant in sorted(set(timers(services, live).values()))[:5]:
        clock.now = instant
        await fire_timers(services)
        assert members(services, later) == members(services, live)
    clock.now = T0 + 60 * DAY
    await fire_timers(services)
    assert members(services, later) == members(services, live)


async def test_an_at_least_rule_is_back_filled_with_the_timers_real_time_sets(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """An "at least 3 orders in 30 days" list has its timers computed in SQL by the back-fill
    (the n-th most recent order leaves the window), and in Python in real time."""
    use_clock(services)
    live = (await create_list(client, project, ORDERS, "In real time"))["id"]
    await until_ready(client, services, project, live)
    await seed(client, project, 40, seed=11)
    await drain(services)
    assert members(services, live)
    backfill(services).chunk = 9
    later = (await create_list(client, project, ORDERS, "Back-filled"))["id"]
    await until_ready(client, services, project, later)
    assert members(services, later) == members(services, live)
    assert timers(services, later) == timers(services, live)
    assert len(timers(services, live)) > len(members(services, live)) // 2


async def test_an_edited_rule_is_back_filled_again_with_facts_only_for_differences(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    use_clock(services)
    for user, plan in {"p1": "pro", "p2": "pro", "p3": "pro", "t1": "team", "t2": "team"}.items():
        await identify(client, project, user, plan=plan)
    await identify(client, project, "f1", plan="free")
    await drain(services)
    list_id = (await create_list(client, project, PRO))["id"]
    await until_ready(client, services, project, list_id)
    assert members(services, list_id) == {"p1", "p2", "p3"}

    team = {**PRO["children"][0], "value": "team"}
    either = {
        "type": "wrapper",
        "group": "parent",
        "operator": "or",
        "children": [PRO["children"][0], team],
    }
    edited = await client.patch(
        f"{LISTS}/{list_id}", json={"rule": either}, headers=bearer(project.sk)
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    assert edited.json()["state"] == "loading" and "progress" in edited.json()
    body = await until_ready(client, services, project, list_id)
    assert body["version"] == 2 and body["users_count"] == 5
    assert members(services, list_id) == {"p1", "p2", "p3", "t1", "t2"}

    only_team = {"type": "wrapper", "group": "parent", "operator": "and", "children": [team]}
    edited = await client.patch(
        f"{LISTS}/{list_id}", json={"rule": only_team}, headers=bearer(project.sk)
    )
    assert edited.json()["version"] == 3
    body = await until_ready(client, services, project, list_id)
    assert members(services, list_id) == {"t1", "t2"} and body["users_count"] == 2
    assert sorted(f[:3] for f in facts(services, list_id)) == [
        ("p1", "entered", 1),
        ("p1", "left", 3),
        ("p2", "entered", 1),
        ("p2", "left", 3),
        ("p3", "entered", 1),
        ("p3", "left", 3),
        ("t1", "entered", 2),
        ("t2", "entered", 2),
    ]


async def test_while_loading_real_time_covers_only_what_the_backfill_has_done(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Below the cursor the real-time path keeps members current; above it, it leaves
    them to the back-fill, which reads the data when it gets there."""
    use_clock(services)
    users = [f"u{n:02d}" for n in range(12)]
    for user in users:
        await identify(client, project, user, plan="free")
    await drain(services)
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(profiles.c.id, profiles.c.external_id).order_by(profiles.c.id)
        ).all()
    ordered = [external for _, external in rows]
    pause_worker_segments(services)
    backfill(services).chunk = 4
    list_id = (await create_list(client, project, PRO))["id"]
    assert await step(services) and await step(services)  # counted, then the first 4 done
    assert (await get_list(client, project, list_id))["progress"] == {"done": 4, "total": 12}

    below, above = ordered[1], ordered[9]
    await identify(client, project, below, plan="pro")
    await identify(client, project, above, plan="pro")
    await drain(services)
    assert members(services, list_id) == {below}
    assert [f[:2] for f in facts(services, list_id)] == [(below, "entered")]

    while await step(services):
        pass
    assert (await get_list(client, project, list_id))["state"] == "ready"
    assert members(services, list_id) == {below, above}
    assert [f[:2] for f in facts(services, list_id)] == [(below, "entered"), (above, "entered")]
    assert users_count(services, list_id) == 2


async def test_a_deleted_list_is_not_back_filled(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    use_clock(services)
    await identify(client, project, "x1", plan="pro")
    await drain(services)
    pause_worker_segments(services)
    list_id = (await create_list(client, project, PRO))["id"]
    deleted = await client.delete(f"{LISTS}/{list_id}", headers=bearer(project.sk))
    assert deleted.status_code == 204
    assert not await step(services)
    assert members(services, list_id) == set()
