"""Dynamic lists in real time, through the HTTP API: members enter and leave as events and
profile changes are processed, and leave a rolling window at the exact instant its
counted events drop out of it (the worker's clock is injected)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services
from tidings.segments.realtime import BatchChanges, ProfileChange, RealtimeSegments
from tidings.store.profiles import ProfileRow
from tidings.store.tables import list_changes, list_members, lists, profiles, segment_timers

LISTS = "/api/client/lists"
SECOND = 1_000_000
DAY = 86_400 * SECOND
T0 = (time.time_ns() // 1000 // SECOND) * SECOND  # whole seconds: exact through ISO-8601

ORDERS: dict[str, Any] = {
    "type": "wrapper",
    "group": "event",
    "path": "name",
    "value": "Order placed",
    "operator": "and",
    "children": [],
    "frequency": {
        "period": {"type": "rolling", "unit": "day", "value": 30},
        "operator": ">=",
        "count": 3,
    },
}
PRO: dict[str, Any] = {
    "type": "wrapper",
    "group": "parent",
    "operator": "and",
    "children": [
        {"type": "string", "group": "user", "path": "data.plan", "operator": "=", "value": "pro"}
    ],
}


class Clock:
    """The worker's clock, set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / SECOND, UTC).isoformat().replace("+00:00", "Z")


def use_clock(services: Services, now: int = T0) -> Clock:
    clock = Clock(now)
    assert services.consumer is not None
    services.consumer.clock = clock
    return clock


def realtime(services: Services) -> RealtimeSegments:
    assert services.consumer is not None and services.consumer.processor.segments is not None
    return services.consumer.processor.segments


async def create_list(
    client: httpx.AsyncClient, project: Project, rule: dict[str, Any], name: str = "Segment"
) -> dict[str, Any]:
    response = await client.post(
        LISTS, json={"name": name, "type": "dynamic", "rule": rule}, headers=bearer(project.sk)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def get_list(client: httpx.AsyncClient, project: Project, list_id: int) -> dict[str, Any]:
    response = await client.get(f"{LISTS}/{list_id}", headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def until_ready(
    client: httpx.AsyncClient, services: Services, project: Project, list_id: int
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body = await get_list(client, project, list_id)
        if body["state"] == "ready":
            return body
        assert time.monotonic() < deadline, f"list {list_id} stayed loading: {body}"
        assert services.consumer is not None
        services.consumer.wake.set()
        await asyncio.sleep(0.01)


async def track(
    client: httpx.AsyncClient, project: Project, user: str, name: str, at: int, **data: Any
) -> None:
    event = {"name": name, "external_id": user, "created_at": iso(at), "data": data}
    response = await client.post("/api/client/events", json=[event], headers=bearer(project.pk))
    assert response.status_code == 204, response.text


async def identify(client: httpx.AsyncClient, project: Project, user: str, **data: Any) -> None:
    response = await client.post(
        "/api/client/identify", json={"external_id": user, "data": data}, headers=bearer(project.pk)
    )
    assert response.status_code == 204, response.text


def members(services: Services, list_id: int) -> set[str]:
    """External ids (or profile ids of anonymous profiles) of the list's members."""
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(profiles.c.id, profiles.c.external_id)
            .join_from(list_members, profiles, profiles.c.id == list_members.c.profile_id)
            .where(list_members.c.list_id == list_id)
        ).all()
    return {external or profile_id for profile_id, external in rows}


def facts(services: Services, list_id: int) -> list[tuple[str, str, int, int]]:
    """(external id, change, list version, created_at) in the order recorded."""
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(
                profiles.c.external_id,
                list_changes.c.change,
                list_changes.c.list_version,
                list_changes.c.created_at,
            )
            .join_from(list_changes, profiles, profiles.c.id == list_changes.c.profile_id)
            .where(list_changes.c.list_id == list_id)
            .order_by(list_changes.c.id)
        ).all()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def timers(services: Services, list_id: int) -> dict[str, int]:
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(profiles.c.external_id, segment_timers.c.due_at)
            .join_from(segment_timers, profiles, profiles.c.id == segment_timers.c.profile_id)
            .where(segment_timers.c.list_id == list_id)
        ).all()
    return {external: due for external, due in rows}


def users_count(services: Services, list_id: int) -> int:
    with services.db.reader.connect() as conn:
        return int(
            conn.execute(sa.select(lists.c.users_count).where(lists.c.id == list_id)).scalar_one()
        )


async def fire_timers(services: Services) -> None:
    """One pass of the worker's timer hook at its (injected) clock."""
    assert services.consumer is not None
    await asyncio.to_thread(services.consumer.run_timers)


async def settle(services: Services, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the worker did not get there"
        assert services.consumer is not None
        services.consumer.wake.set()
        await asyncio.sleep(0.01)


# -- event frequency: enter in real time, leave at the exact instant ---------------------------


async def test_orders_enter_in_real_time_and_leave_when_the_window_drops_them(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    clock = use_clock(services)
    created = await create_list(client, project, ORDERS, "Frequent buyers")
    await until_ready(client, services, project, created["id"])
    list_id = created["id"]

    await track(client, project, "ann", "Order placed", T0 - 10 * DAY)
    await track(client, project, "ann", "Order placed", T0 - 5 * DAY)
    await drain(services)
    assert members(services, list_id) == set()
    await track(client, project, "ann", "Order placed", T0 - 1 * DAY)
    await drain(services)
    assert members(services, list_id) == {"ann"}
    assert facts(services, list_id) == [("ann", "entered", 1, T0)]
    assert users_count(services, list_id) == 1
    # Three orders in 30 days until the first is 30 days old: exactly then.
    due = T0 - 10 * DAY + 30 * DAY
    assert timers(services, list_id) == {"ann": due}

    clock.now = due - 1
    await fire_timers(services)
    assert members(services, list_id) == {"ann"}

    clock.now = due
    await fire_timers(services)
    await settle(services, lambda: members(services, list_id) == set())
    assert facts(services, list_id) == [("ann", "entered", 1, T0), ("ann", "left", 1, due)]
    assert users_count(services, list_id) == 0
    assert timers(services, list_id) == {}  # two orders left: the clock alone won't change it

    clock.now = due + 40 * DAY
    await fire_timers(services)
    await track(client, project, "ann", "Page viewed", due + DAY)
    await drain(services)
    assert [f[1] for f in facts(services, list_id)] == ["entered", "left"]  # once each


async def test_a_late_worker_records_each_change_at_the_instant_it_happened(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Timers that came due while the worker was away: every change is recorded at its own
    instant, also a member that left and came back (an order dated in the future)."""
    clock = use_clock(services)
    list_id = (await create_list(client, project, ORDERS))["id"]
    await until_ready(client, services, project, list_id)
    for user, ages in {"bob": (20, 15, 10), "cat": (25, 2, 1)}.items():
        for age in ages:
            await track(client, project, user, "Order placed", T0 - age * DAY)
    # bob's fourth order is dated ahead: it counts from then on.
    await track(client, project, "bob", "Order placed", T0 + 12 * DAY)
    await drain(services)
    assert members(services, list_id) == {"bob", "cat"}
    assert timers(services, list_id) == {"bob": T0 + 10 * DAY, "cat": T0 + 5 * DAY}

    clock.now = T0 + 60 * DAY
    await fire_timers(services)
    await settle(services, lambda: members(services, list_id) == set())
    assert sorted(facts(services, list_id)[2:], key=lambda f: f[3]) == [
        ("cat", "left", 1, T0 + 5 * DAY),
        ("bob", "left", 1, T0 + 10 * DAY),  # the order of T0-20d left the window
        ("bob", "entered", 1, T0 + 12 * DAY),  # the order dated ahead happened
        ("bob", "left", 1, T0 + 15 * DAY),  # the order of T0-15d left the window
    ]
    assert timers(services, list_id) == {}


# -- traits -------------------------------------------------------------------------------------


async def test_a_trait_list_follows_profile_updates(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    use_clock(services)
    list_id = (await create_list(client, project, PRO, "Pro plan"))["id"]
    await until_ready(client, services, project, list_id)

    await identify(client, project, "dan", plan="pro")
    await identify(client, project, "eve", plan="free")
    await drain(services)
    assert members(services, list_id) == {"dan"}
    await identify(client, project, "dan", plan="free")
    await identify(client, project, "eve", plan="pro")
    await drain(services)
    assert members(services, list_id) == {"eve"}
    await identify(client, project, "dan", plan="pro")
    await drain(services)
    assert members(services, list_id) == {"dan", "eve"}
    assert sorted((f[0], f[1]) for f in facts(services, list_id)) == [
        ("dan", "entered"),
        ("dan", "entered"),
        ("dan", "left"),
        ("eve", "entered"),
    ]
    assert users_count(services, list_id) == 2
    assert timers(services, list_id) == {}  # nothing here changes with the clock


async def test_only_the_lists_that_read_a_change_are_evaluated(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    use_clock(services)
    orders = (await create_list(client, project, ORDERS))["id"]
    pro = (await create_list(client, project, PRO))["id"]
    await until_ready(client, services, project, orders)
    await until_ready(client, services, project, pro)
    await identify(client, project, "fay", plan="free")
    await drain(services)  # a new profile is evaluated against every list of its project
    segments = realtime(services)

    async def evaluations_for(action: Any) -> int:
        before = segments.evaluations
        await action
        await drain(services)
        return segments.evaluations - before

    assert await evaluations_for(track(client, project, "fay", "Page viewed", T0)) == 0
    assert await evaluations_for(identify(client, project, "fay", colour="red")) == 0
    assert await evaluations_for(identify(client, project, "fay", plan="free")) == 0  # same
    assert await evaluations_for(track(client, project, "fay", "Order placed", T0)) == 1
    assert await evaluations_for(identify(client, project, "fay", plan="pro")) == 1
    assert members(services, pro) == {"fay"} and members(services, orders) == set()


def test_the_dependency_index_maps_events_fields_and_traits_to_lists() -> None:
    segments = RealtimeSegments()
    segments._lists = {
        1: _live(1, ORDERS),
        2: _live(2, PRO),
        3: _live(3, {**PRO, "children": [{**PRO["children"][0], "path": "data.address.city"}]}),
        4: _live(4, ORDERS, project_id=2),
    }
    segments._reindex()
    row = ProfileRow("p1", 1, None, None, None, None, None, {}, 0, 0)
    changes = BatchChanges(
        profiles={"p1": row},
        changed={"p1": ProfileChange(trait_keys=frozenset({"address"}))},
        events=[(1, "p2", "Order placed"), (1, "p3", "Page viewed"), (2, "p4", "Signed up")],
    )
    assert segments.affected(changes) == {1: {"p2"}, 3: {"p1"}}
    everything = BatchChanges(profiles={"p1": row}, changed={"p1": ProfileChange(everything=True)})
    assert segments.affected(everything) == {1: {"p1"}, 2: {"p1"}, 3: {"p1"}}
    gone = BatchChanges(events=[(1, "p2", "Order placed")], gone=["p2"])
    assert segments.affected(gone) == {}


def _live(list_id: int, rule: dict[str, Any], project_id: int = 1) -> Any:
    from tidings.segments.realtime import LiveList

    return LiveList.of(list_id, project_id, 1, rule)


# -- identity -----------------------------------------------------------------------------------


async def test_a_merge_evaluates_the_survivor_and_an_erasure_leaves_no_trace(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    use_clock(services)
    list_id = (await create_list(client, project, ORDERS))["id"]
    await until_ready(client, services, project, list_id)
    for age in (3, 2):
        response = await client.post(
            "/api/client/events",
            json=[
                {
                    "name": "Order placed",
                    "anonymous_id": "anon-9",
                    "created_at": iso(T0 - age * DAY),
                }
            ],
            headers=bearer(project.pk),
        )
        assert response.status_code == 204
    await track(client, project, "gus", "Order placed", T0 - DAY)
    await drain(services)
    assert members(services, list_id) == set()

    alias = await client.post(
        "/api/client/alias",
        json={"anonymous_id": "anon-9", "external_id": "gus"},
        headers=bearer(project.pk),
    )
    assert alias.status_code == 204
    await drain(services)
    assert members(services, list_id) == {"gus"}  # the survivor has all three orders
    assert timers(services, list_id) == {"gus": T0 + 27 * DAY}

    deleted = await client.delete("/api/client/users/gus", headers=bearer(project.sk))
    assert deleted.status_code in (202, 204), deleted.text
    await drain(services)
    assert members(services, list_id) == set() and users_count(services, list_id) == 0
    with services.db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(segment_timers)).scalar() == 0


def test_the_closed_form_of_at_least_rules_agrees_with_next_change() -> None:
    """``LiveList.next_change`` answers "at least n in the window" without the general
    sweep when nothing is dated ahead; it must give the same instant."""
    from tidings.domain.rules import EventFact, ProfileFacts, evaluate, next_change
    from tidings.segments.realtime import LiveList

    rng = random.Random(3)
    profile = ProfileFacts(id="p")
    for trial in range(400):
        count, days = rng.randint(1, 4), rng.choice((1, 7, 30))
        operator = rng.choice((">=", ">"))
        rule = {
            **ORDERS,
            "frequency": {**ORDERS["frequency"], "operator": operator, "count": count},
        }
        rule["frequency"]["period"] = {"type": "rolling", "unit": "day", "value": days}
        live = LiveList.of(1, 1, 1, rule)
        assert live.at_least is not None
        history = [
            EventFact(
                rng.choice(("Order placed", "Order placed", "Page viewed")),
                {},
                T0 - rng.randint(-2 if trial % 4 == 0 else 0, 40) * DAY // 3,
            )
            for _ in range(rng.randint(0, 8))
        ]
        matched = evaluate(live.rule, profile, history, T0)
        expected = next_change(live.rule, profile, history, T0)
        assert live.next_change(profile, history, T0, matched) == expected, (rule, history)


def _orders(operator: str, count: int, days: int, name: str = "Order placed") -> dict[str, Any]:
    period = {"type": "rolling", "unit": "day", "value": days}
    return {
        **ORDERS,
        "value": name,
        "frequency": {"period": period, "operator": operator, "count": count},
    }


def _wrap(operator: str, *children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "wrapper", "group": "parent", "operator": operator, "children": list(children)}


def test_the_drift_shortcuts_agree_with_next_change() -> None:
    """``LiveList.next_change`` skips ``next_change`` when the rule's drift says the clock
    cannot flip the result; for every kind of drift it must answer the same."""
    from tidings.domain.rules import EventFact, ProfileFacts, evaluate, next_change
    from tidings.segments.realtime import LiveList

    ever = {**ORDERS, "frequency": None}
    del ever["frequency"]
    rules = {
        "down": [_orders(">=", 3, 30), _wrap("and", _orders(">", 1, 7), PRO["children"][0])],
        "up": [_orders("<", 2, 7), _wrap("none", _orders(">=", 2, 30)), _orders("=", 0, 14)],
        "any": [
            _orders("=", 2, 30),
            _wrap("or", _orders(">=", 3, 30), _orders("=", 0, 14, "App opened")),
            _wrap("xor", _orders(">=", 1, 7), PRO["children"][0]),
        ],
        "const": [ever, PRO],
    }
    rng = random.Random(4)
    for kind, raws in rules.items():
        for raw in raws:
            live = LiveList.of(1, 1, 1, raw)
            assert live.drift == kind, raw
            for trial in range(150):
                profile = ProfileFacts(id="p", data={"plan": rng.choice(("pro", "free"))})
                history = [
                    EventFact(
                        rng.choice(("Order placed", "Order placed", "App opened")),
                        {},
                        T0 - rng.randint(-3 if trial % 3 == 0 else 0, 40) * DAY // 2,
                    )
                    for _ in range(rng.randint(0, 7))
                ]
                matched = evaluate(live.rule, profile, history, T0)
                expected = next_change(live.rule, profile, history, T0)
                got = live.next_change(profile, history, T0, matched)
                assert got == expected, (raw, history, profile.data)
