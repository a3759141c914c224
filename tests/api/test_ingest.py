"""POST /api/client/events, /identify, /alias, /devices and PATCH /users: the happy paths."""

from __future__ import annotations

import httpx

from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services


async def post(client: httpx.AsyncClient, path: str, key: str, body: object) -> httpx.Response:
    return await client.post(f"/api/client{path}", json=body, headers=bearer(key))


async def profile(client: httpx.AsyncClient, project: Project, external_id: str) -> dict:
    response = await client.get(f"/api/client/users/{external_id}", headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return response.json()


async def events_of(client: httpx.AsyncClient, project: Project, external_id: str) -> list[dict]:
    response = await client.get(
        f"/api/client/users/{external_id}/events", headers=bearer(project.sk)
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


async def test_event_is_acknowledged_then_stored_with_its_user_block(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    response = await post(
        client,
        "/events",
        project.pk,
        [
            {
                "name": "Order placed",
                "external_id": "u_1",
                "data": {"total": 12.5},
                "user": {"email": "Sam@Example.com", "data": {"plan": "pro"}},
            }
        ],
    )
    assert response.status_code == 204
    assert response.headers["x-request-id"].startswith("req_")
    await drain(services)
    user = await profile(client, project, "u_1")
    assert user["email"] == "Sam@example.com"
    assert user["data"] == {"plan": "pro"}
    events = await events_of(client, project, "u_1")
    assert [e["name"] for e in events] == ["Order placed"]
    assert events[0]["data"] == {"total": 12.5}
    assert events[0]["id"].startswith("evt_")


async def test_created_at_defaults_to_receive_time_and_is_kept_when_given(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [
        {"name": "Old", "external_id": "u_t", "created_at": "2026-04-30T08:15:00Z"},
        {"name": "Now", "external_id": "u_t"},
    ]
    assert (await post(client, "/events", project.pk, body)).status_code == 204
    await drain(services)
    events = await events_of(client, project, "u_t")
    assert [e["name"] for e in events] == ["Now", "Old"]
    assert events[1]["created_at"] == "2026-04-30T08:15:00.000Z"
    assert events[0]["created_at"] > "2026-11-01"


async def test_traits_merge_shallowly_and_null_clears_a_key(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    first = {"external_id": "u_m", "data": {"plan": "pro", "seats": 3, "nested": {"a": 1}}}
    second = {"external_id": "u_m", "data": {"seats": None, "nested": {"b": 2}, "new": True}}
    assert (await post(client, "/identify", project.pk, first)).status_code == 204
    assert (await post(client, "/identify", project.pk, second)).status_code == 204
    await drain(services)
    user = await profile(client, project, "u_m")
    assert user["data"] == {"plan": "pro", "nested": {"b": 2}, "new": True}


async def test_one_users_writes_apply_in_acceptance_order(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for value in range(30):
        body = {"external_id": "u_order", "data": {"step": value}}
        assert (await post(client, "/identify", project.pk, body)).status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_order"))["data"] == {"step": 29}


async def test_identify_links_anonymous_events_to_the_known_user(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    anonymous = [{"name": "Product viewed", "anonymous_id": "anon-1"}]
    assert (await post(client, "/events", project.pk, anonymous)).status_code == 204
    await drain(services)
    identify = {"anonymous_id": "anon-1", "external_id": "u_known", "email": "k@example.com"}
    assert (await post(client, "/identify", project.pk, identify)).status_code == 204
    await drain(services)
    user = await profile(client, project, "u_known")
    assert user["anonymous_ids"] == ["anon-1"]
    assert [e["name"] for e in await events_of(client, project, "u_known")] == ["Product viewed"]


async def test_alias_links_ids(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"anonymous_id": "anon-a", "external_id": "u_alias"}
    assert (await post(client, "/alias", project.pk, body)).status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_alias"))["anonymous_ids"] == ["anon-a"]


async def test_phone_is_normalised_with_the_locale_region(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"external_id": "u_p", "phone": "0491 570 006", "locale": "en-AU"}
    assert (await post(client, "/identify", project.pk, body)).status_code == 204
    body = {"external_id": "u_de", "phone": "030 901820", "locale": "de-DE"}
    assert (await post(client, "/identify", project.pk, body)).status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_p"))["phone"] == "+61491570006"
    assert (await profile(client, project, "u_de"))["phone"] == "+4930901820"


async def test_phone_without_locale_uses_the_projects_default_locale(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = {"external_id": "u_p2", "phone": "0400 123 456"}  # project locale is en-AU
    assert (await post(client, "/identify", project.pk, body)).status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_p2"))["phone"] == "+61400123456"


async def test_devices_are_upserted_by_device_id(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    device = {
        "external_id": "u_d",
        "device_id": "dev-1",
        "token": "t1",
        "os": "ios",
        "model": "iPhone",
        "app_build": "1",
        "app_version": "1.0",
    }
    assert (await post(client, "/devices", project.pk, device)).status_code == 204
    assert (
        await post(client, "/devices", project.pk, {**device, "token": "t2"})
    ).status_code == 204
    await drain(services)
    devices = (await profile(client, project, "u_d"))["devices"]
    assert [(d["device_id"], d["token"]) for d in devices] == [("dev-1", "t2")]


async def test_patch_users_upserts_many(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [
        {"external_id": "u_a", "email": "a@example.com"},
        {"external_id": "u_b", "data": {"x": 1}, "timezone": "Europe/Berlin"},
    ]
    response = await client.patch("/api/client/users", json=body, headers=bearer(project.sk))
    assert response.status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_a"))["email"] == "a@example.com"
    b = await profile(client, project, "u_b")
    assert (b["data"], b["timezone"]) == ({"x": 1}, "Europe/Berlin")


async def test_null_ids_and_data_are_treated_as_absent(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "E", "anonymous_id": None, "external_id": "u_n", "data": None, "user": None}]
    assert (await post(client, "/events", project.pk, body)).status_code == 204
    await drain(services)
    assert (await events_of(client, project, "u_n"))[0]["data"] == {}


async def test_order_holds_across_the_anonymous_and_known_ids_of_one_user(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    # Routed by different ids (so possibly different partitions), applied in acceptance order.
    services.consumer.stop()  # let a backlog build up, as under load
    anonymous = [{"name": "Viewed", "anonymous_id": "anon-o", "user": {"data": {"plan": "free"}}}]
    assert (await post(client, "/events", project.pk, anonymous)).status_code == 204
    identify = {"anonymous_id": "anon-o", "external_id": "u_o", "data": {"plan": "pro"}}
    assert (await post(client, "/identify", project.pk, identify)).status_code == 204
    services.consumer.start()
    await drain(services)
    assert (await profile(client, project, "u_o"))["data"] == {"plan": "pro"}


async def test_an_empty_device_token_is_treated_as_absent(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    device = {
        "anonymous_id": "anon-dev",
        "external_id": "u_tok",
        "device_id": "d-empty",
        "token": "",
        "os": "ios",
        "model": "iPhone",
        "app_build": "1",
        "app_version": "1.0",
    }
    assert (await post(client, "/devices", project.pk, device)).status_code == 204
    await drain(services)
    assert (await profile(client, project, "u_tok"))["devices"][0]["token"] is None


async def test_integers_of_any_size_are_kept(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    big = -8132051169622910566400  # beyond 64 bits
    body = [{"name": "Big", "external_id": "u_big", "data": {"n": big}}]
    assert (await post(client, "/events", project.pk, body)).status_code == 204
    await drain(services)
    assert (await events_of(client, project, "u_big"))[0]["data"] == {"n": big}


async def test_health_tells_whether_and_how_this_server_applies_the_log(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    sent = await client.post(
        "/api/client/events", json=[{"name": "E", "external_id": "u_h"}], headers=bearer(project.pk)
    )
    assert sent.status_code == 204
    await drain(services)
    health = (await client.get("/api/health")).json()
    assert health["log_lag"] == 0
    assert health["worker"] is True and health["worker_mode"] == "thread"
    assert health["processed"] >= 1
    consumer, services.consumer = services.consumer, None  # as in `tidings api`
    try:
        api_only = (await client.get("/api/health")).json()
    finally:
        services.consumer = consumer
    assert api_only["worker"] is False and api_only["worker_mode"] is None
