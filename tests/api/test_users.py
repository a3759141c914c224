"""Reads of profiles and timelines, and the synchronous users batch."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.api.test_validation import assert_problem
from tests.conftest import CONTRACT, Project, bearer, drain
from tidings.bootstrap import Services


async def test_timeline_is_newest_first_with_cursor_pagination(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [
        {"name": f"E{i}", "external_id": "u_t", "created_at": f"2026-01-01T00:00:{i:02d}Z"}
        for i in range(7)
    ]
    assert (
        await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    ).status_code == 204
    await drain(services)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(
            "/api/client/users/u_t/events", params=params, headers=bearer(project.sk)
        )
        assert response.status_code == 200
        page = response.json()
        assert page["limit"] == 3
        seen += [e["name"] for e in page["results"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"E{i}" for i in reversed(range(7))]
    assert pages == 3


async def test_timeline_without_payload(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "E", "external_id": "u_np", "data": {"secret": 1}}]
    await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    await drain(services)
    response = await client.get(
        "/api/client/users/u_np/events?include_payload=false", headers=bearer(project.sk)
    )
    (event,) = response.json()["results"]
    assert "data" not in event
    assert set(event) == {"id", "name", "created_at", "external_id", "anonymous_id"}


async def test_bad_cursor_and_unknown_user(client: httpx.AsyncClient, project: Project) -> None:
    assert_problem(
        await client.get("/api/client/users/nobody", headers=bearer(project.sk)),
        404,
        "resource_missing",
    )
    await client.post(
        "/api/client/events", json=[{"name": "E", "external_id": "u_c"}], headers=bearer(project.pk)
    )
    response = await client.get(
        "/api/client/users/nobody/events?cursor=zzz", headers=bearer(project.sk)
    )
    assert_problem(response, 404, "resource_missing")


async def test_users_batch_answers_per_item_in_request_order(
    client: httpx.AsyncClient, project: Project
) -> None:
    body = [
        {"external_id": "b_1", "email": "one@example.com", "data": {"n": 1}},
        {"external_id": "b_2", "email": "not-an-email"},
        {"anonymous_id": "anon-b3", "phone": "+61400123456"},
        {"external_id": "b_4", "unknown": True},
        "not an object",
    ]
    response = await client.post("/api/client/users/batch", json=body, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["succeeded"], result["failed"]) == (2, 3)
    assert [r["index"] for r in result["results"]] == [0, 1, 2, 3, 4]
    first, second, third, fourth, fifth = result["results"]
    assert first["external_id"] == "b_1"
    assert first["user"]["email"] == "one@example.com" and first["user"]["data"] == {"n": 1}
    assert second["error"]["code"] == "validation_failed"
    assert second["error"]["param"] == "[1].email"
    assert third["user"]["anonymous_ids"] == ["anon-b3"]
    assert third["user"]["phone"] == "+61400123456"
    assert fourth["error"]["code"] == "parameter_unknown"
    assert fifth["error"]["code"] == "parameter_invalid_format"
    # The failed items wrote nothing; the good ones are readable at once.
    assert (
        await client.get("/api/client/users/b_2", headers=bearer(project.sk))
    ).status_code == 404
    assert (
        await client.get("/api/client/users/b_1", headers=bearer(project.sk))
    ).status_code == 200


async def test_users_batch_replays_with_its_body(
    client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "batch-1"})
    body = [{"external_id": "b_r", "data": {"v": 1}}]
    first = await client.post("/api/client/users/batch", json=body, headers=headers)
    again = await client.post("/api/client/users/batch", json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_every_sdk_request_of_the_contract_is_accepted(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    contract = json.loads(CONTRACT.read_text())
    for request in contract["requests"]:
        headers = {
            name: value.replace("{pk}", project.pk).replace("{sk}", project.sk)
            for name, value in request["headers"].items()
        }
        response = await client.request(
            request["method"],
            request["path"],
            content=json.dumps(request["body"]).encode(),
            headers=headers,
        )
        assert 200 <= response.status_code < 300, (request["sdk"], response.text)
    await drain(services)
    user = (await client.get("/api/client/users/u_42", headers=bearer(project.sk))).json()
    assert user["email"] == "sam@example.com"
    assert user["phone"] == "+61491570006"
    assert user["data"]["lifetime_value"] == 199.5
    assert "0d9e6a7b-1111-4c2d-8e3f-5a6b7c8d9e0f" in user["anonymous_ids"]
    assert [d["device_id"] for d in user["devices"]] == ["web-7c1e"]
    names = {
        e["name"]
        for e in (
            await client.get("/api/client/users/u_42/events", headers=bearer(project.sk))
        ).json()["results"]
    }
    assert names == {"Product viewed", "Order placed"}
    kim = (await client.get("/api/client/users/u_77", headers=bearer(project.sk))).json()
    assert kim["email"] == "kim@example.com" and kim["data"]["plan"] == "starter"
    jane = (await client.get("/api/client/users/cust-9f4b21", headers=bearer(project.sk))).json()
    assert jane["phone"] == "+61400123456" and jane["locale"] == "en-AU"


async def test_error_reads_as_the_js_sdk_reads_it(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await client.post("/api/client/events", json=[{}], headers=bearer(project.pk))
    body = response.json()
    # 'API Error HTTP <status> | code=<code> | <message> | request_id=<id>'
    assert body["code"] and (body.get("message") or body.get("error"))
    assert body["request_id"] == response.headers["x-request-id"]


async def test_openapi_describes_the_ingest_endpoints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [
        ("/api/client/events", "post"),
        ("/api/client/identify", "post"),
        ("/api/client/alias", "post"),
        ("/api/client/devices", "post"),
        ("/api/client/users", "patch"),
        ("/api/client/users/batch", "post"),
        ("/api/client/users/{external_id}", "get"),
        ("/api/client/users/{external_id}/events", "get"),
    ]:
        assert method in paths[path], path
    event = schema["components"]["schemas"]["EventIn"]
    assert event["required"] == ["name"] and event["additionalProperties"] is False
    timeline = paths["/api/client/users/{external_id}/events"]["get"]
    assert "422" not in timeline["responses"] and "401" in timeline["responses"]
    assert timeline["security"] == [{"bearer": []}]
    row = schema["components"]["schemas"]["Event"]
    assert "id" in row["properties"]  # the read model, not the ingest one


async def test_users_batch_waits_for_a_worker_in_another_process(tmp_path) -> None:
    """The API without a worker polls the stored positions of whichever worker runs."""
    from tests.conftest import create_project, make_services, make_settings
    from tidings.api.app import create_app

    api = make_services(make_settings(tmp_path, run_worker=False, sync_timeout=20))
    worker = make_services(make_settings(tmp_path, run_worker=True))
    api.start()
    worker.start()
    try:
        project = create_project(api)
        transport = httpx.ASGITransport(app=create_app(api, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/api/client/users/batch",
                json=[{"external_id": "remote", "data": {"x": 1}}],
                headers=bearer(project.sk),
            )
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["user"]["data"] == {"x": 1}
    finally:
        api.stop()
        worker.stop()


async def test_openapi_has_no_dangling_references(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["components"]["schemas"])
