"""Identity: links, merges, refusals, erasure — through the API and the real pipeline."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tests.plans import plans_of
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.store.tables import devices, events, identities, merge_rejections, profiles


async def send(client: httpx.AsyncClient, key: str, path: str, body: Any) -> None:
    response = await client.post(f"/api/client{path}", json=body, headers=bearer(key))
    assert response.status_code == 204, response.text


async def user(client: httpx.AsyncClient, project: Project, external_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/client/users/{external_id}", headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return response.json()


async def names(client: httpx.AsyncClient, project: Project, external_id: str) -> list[str]:
    response = await client.get(
        f"/api/client/users/{external_id}/events", headers=bearer(project.sk)
    )
    return sorted(e["name"] for e in response.json()["results"])


async def test_alias_before_any_event_then_anonymous_events_land_on_the_known_user(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await send(client, project.pk, "/alias", {"anonymous_id": "a-1", "external_id": "u-1"})
    await send(client, project.pk, "/events", [{"name": "Later", "anonymous_id": "a-1"}])
    await drain(services)
    assert (await user(client, project, "u-1"))["anonymous_ids"] == ["a-1"]
    assert await names(client, project, "u-1") == ["Later"]


async def test_a_second_anonymous_chain_merges_into_a_known_user(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await send(client, project.pk, "/identify", {"anonymous_id": "phone", "external_id": "u-2"})
    await send(client, project.pk, "/events", [{"name": "On laptop", "anonymous_id": "laptop"}])
    await send(
        client, project.pk, "/identify", {"anonymous_id": "laptop", "data": {"theme": "dark"}}
    )
    await drain(services)
    await send(client, project.pk, "/identify", {"anonymous_id": "laptop", "external_id": "u-2"})
    await drain(services)
    merged = await user(client, project, "u-2")
    assert sorted(merged["anonymous_ids"]) == ["laptop", "phone"]
    assert merged["data"] == {"theme": "dark"}
    assert await names(client, project, "u-2") == ["On laptop"]
    with services.db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar_one() == 1


async def test_one_anonymous_id_sent_with_two_external_ids_is_refused_and_recorded(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await send(client, project.pk, "/identify", {"anonymous_id": "shared", "external_id": "u-a"})
    await drain(services)
    await send(client, project.pk, "/identify", {"anonymous_id": "shared", "external_id": "u-b"})
    await send(client, project.pk, "/events", [{"name": "Anon", "anonymous_id": "shared"}])
    await drain(services)
    first, second = await user(client, project, "u-a"), await user(client, project, "u-b")
    assert first["anonymous_ids"] == ["shared"] and second["anonymous_ids"] == []
    assert await names(client, project, "u-a") == ["Anon"]  # the id stayed where it was
    for profile in (first, second):
        (refusal,) = profile["merge_rejections"]
        assert refusal["anonymous_id"] == "shared" and refusal["external_id"] == "u-b"
        assert "u-a" in refusal["reason"]


async def test_a_refused_merge_is_a_state_conflict_in_the_synchronous_batch(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await send(client, project.pk, "/identify", {"anonymous_id": "taken", "external_id": "u-x"})
    await drain(services)
    response = await client.post(
        "/api/client/users/batch",
        json=[{"anonymous_id": "taken", "external_id": "u-y"}, {"external_id": "u-z"}],
        headers=bearer(project.sk),
    )
    result = response.json()
    assert result["results"][0]["error"]["code"] == "state_conflict"
    assert "u-x" in result["results"][0]["error"]["message"]
    assert "user" in result["results"][1]
    assert (result["succeeded"], result["failed"]) == (1, 1)


async def test_the_same_device_token_under_a_new_device_id_moves_the_device(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    device = {
        "external_id": "u-dev",
        "device_id": "install-1",
        "token": "push-token",
        "os": "ios",
        "model": "iPhone",
        "app_build": "1",
        "app_version": "1.0",
    }
    await send(client, project.pk, "/devices", device)
    await drain(services)
    await send(client, project.pk, "/devices", {**device, "device_id": "install-2"})
    await drain(services)
    shown = (await user(client, project, "u-dev"))["devices"]
    assert [(d["device_id"], d["token"]) for d in shown] == [("install-2", "push-token")]


def _append(services: Services, project_id: int, items: list[tuple[str, dict[str, Any]]]) -> None:
    services.log.append(
        [
            AppendRequest(
                [
                    LogEntry(
                        project_id,
                        kind,  # type: ignore[arg-type]
                        partition_of(project_id, p.get("external_id") or p.get("anonymous_id"), 8),
                        p,
                        1_000 + i,
                    )
                    for i, (kind, p) in enumerate(items)
                ]
            )
        ]
    )


def _count(services: Services, table: sa.Table) -> int:
    with services.db.reader.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def test_erasure_removes_the_profile_and_everything_about_it(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    device = {"device_id": "d-e", "os": "ios", "model": "m", "app_build": "1", "app_version": "1"}
    _append(
        services,
        project.id,
        [
            ("identify", {"external_id": "gone", "anonymous_id": "gone-anon", "data": {"x": 1}}),
            ("event", {"name": "E", "external_id": "gone", "message_id": "e1"}),
            ("device", {"external_id": "gone", **device}),
        ],
    )
    await drain(services)
    _append(services, project.id, [("erase", {"external_id": "gone"})])
    await drain(services)
    for table in (profiles, events, identities, devices):
        assert _count(services, table) == 0, table.name
    response = await client.get("/api/client/users/gone", headers=bearer(project.sk))
    assert response.status_code == 404
    # Erased means forgotten: the same ids later start a fresh, empty profile.
    await send(client, project.pk, "/events", [{"name": "Back", "external_id": "gone"}])
    await drain(services)
    fresh = await user(client, project, "gone")
    assert fresh["data"] == {} and fresh["anonymous_ids"] == []


async def test_erasure_and_recreation_within_one_batch(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    services.consumer.stop()  # everything below is applied as one batch
    _append(
        services,
        project.id,
        [
            ("identify", {"external_id": "again", "data": {"old": True}}),
            ("event", {"name": "Old", "external_id": "again", "message_id": "o1"}),
            ("erase", {"external_id": "again"}),
            ("identify", {"external_id": "again", "data": {"new": True}}),
            ("event", {"name": "New", "external_id": "again", "message_id": "n1"}),
        ],
    )
    services.consumer.start()
    await drain(services)
    again = await user(client, project, "again")
    assert again["data"] == {"new": True}
    assert await names(client, project, "again") == ["New"]


async def test_the_data_schema_records_paths_and_types(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await send(
        client,
        project.pk,
        "/events",
        [
            {
                "name": "Order placed",
                "external_id": "u-s",
                "data": {"total": 12.5, "items": ["a"], "ship": {"city": "Perth"}},
                "user": {"data": {"plan": "pro", "signed_up": "2026-01-02", "vip": False}},
            }
        ],
    )
    await drain(services)
    response = await client.get("/api/client/schema", headers=bearer(project.sk))
    assert response.status_code == 200
    seen = {
        (r["source"], r["event_name"], r["path"], r["type"]) for r in response.json()["results"]
    }
    assert seen == {
        ("event", "Order placed", "total", "number"),
        ("event", "Order placed", "items", "array"),
        ("event", "Order placed", "ship.city", "string"),
        ("trait", None, "plan", "string"),
        ("trait", None, "signed_up", "date"),
        ("trait", None, "vip", "boolean"),
    }
    only_traits = await client.get("/api/client/schema?source=trait", headers=bearer(project.sk))
    assert {r["path"] for r in only_traits.json()["results"]} == {"plan", "signed_up", "vip"}
    assert (await client.get("/api/client/schema", headers=bearer(project.pk))).status_code == 401


async def test_merges_racing_across_partitions_end_consistent(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Many people at once, each: anonymous events, then an identify, sent concurrently."""
    import asyncio
    import random

    people = [(f"anon-{i}", f"user-{i}") for i in range(40)]

    async def person(anonymous_id: str, external_id: str) -> None:
        await send(
            client,
            project.pk,
            "/events",
            [{"name": f"Viewed {k}", "anonymous_id": anonymous_id} for k in range(3)],
        )
        await send(
            client,
            project.pk,
            "/identify",
            {"anonymous_id": anonymous_id, "external_id": external_id},
        )
        await send(
            client, project.pk, "/events", [{"name": "Bought", "anonymous_id": anonymous_id}]
        )

    random.Random(7).shuffle(people)
    await asyncio.gather(*[person(a, u) for a, u in people])
    await drain(services)
    for anonymous_id, external_id in people:
        profile = await user(client, project, external_id)
        assert profile["anonymous_ids"] == [anonymous_id]
        assert await names(client, project, external_id) == [
            "Bought",
            "Viewed 0",
            "Viewed 1",
            "Viewed 2",
        ]
    assert _count(services, profiles) == len(people)


def test_refusals_answering_a_batch_are_found_through_indexes(
    services: Services, project: Project
) -> None:
    """The reads of refused merges that answer ``users/batch`` search by log position and
    by anonymous id instead of reading every refusal of the database."""
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(merge_rejections),
            [
                {
                    "id": f"rej_{n}",
                    "project_id": project.id,
                    "anonymous_id": f"a-{n}",
                    "external_id": f"u-{n}",
                    "profile_id": f"prf_{n}",
                    "other_profile_id": f"prf_o{n}",
                    "reason": "linked to another user",
                    "log_seq": n,
                    "created_at": 1_000 + n,
                }
                for n in range(200)
            ],
        )
        if conn.dialect.name == "postgresql":  # statistics, so that it weighs the two indexes
            conn.exec_driver_sql("ANALYZE merge_rejections")
    store = services.profiles
    found: list[Any] = []
    by_seq = plans_of(
        services.db.reader,
        lambda: found.append(store.rejections_at(project.id, [1, 5, 500])),
        "merge_rejections",
    )
    by_link = plans_of(
        services.db.reader,
        lambda: found.append(store.link_rejections(project.id, {("a-2", "u-2")}, 0)),
        "merge_rejections",
    )
    assert sorted(found[0]) == [1, 5] and list(found[1]) == [("a-2", "u-2")]
    assert len(by_seq) == 1 and "ix_merge_rejections_project_seq" in by_seq[0], by_seq
    assert len(by_link) == 1 and "ix_merge_rejections_project_anonymous" in by_link[0], by_link
