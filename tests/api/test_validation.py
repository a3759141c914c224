"""Bad input: a clear error in the problem envelope, and nothing written."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services

VALID_EVENT = {"name": "Order placed", "external_id": "u_1"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == code
    assert body["message"] and body["error"] == body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["request_id"].startswith("req_")
    return body


async def assert_nothing_written(services: Services) -> None:
    await drain(services)
    assert services.log.pending() == 0
    assert services.committer.committed_items == 0


@pytest.mark.parametrize(
    ("event", "status", "code", "param"),
    [
        ({"external_id": "u"}, 400, "parameter_missing", "[1].name"),
        ({"name": "", "external_id": "u"}, 400, "parameter_invalid_empty", "[1].name"),
        ({"name": 5, "external_id": "u"}, 400, "parameter_invalid_format", "[1].name"),
        ({"name": "E"}, 400, "parameter_missing", "[1].external_id"),
        ({"name": "E", "external_id": ""}, 400, "parameter_invalid_empty", "[1].external_id"),
        ({"name": "E", "external_id": 42}, 400, "parameter_invalid_format", "[1].external_id"),
        (
            {"name": "E", "external_id": "x" * 256},
            400,
            "parameter_invalid_format",
            "[1].external_id",
        ),
        ({"name": "E", "external_id": "u", "extra": 1}, 400, "parameter_unknown", "[1].extra"),
        (
            {"name": "E", "external_id": "u", "data": [1]},
            400,
            "parameter_invalid_format",
            "[1].data",
        ),
        (
            {"name": "E", "external_id": "u", "user": "x"},
            400,
            "parameter_invalid_format",
            "[1].user",
        ),
        (
            {"name": "E", "external_id": "u", "user": {"plan": "pro"}},
            400,
            "parameter_unknown",
            "[1].user.plan",
        ),
        (
            {"name": "E", "external_id": "u", "user": {"email": "nope"}},
            422,
            "validation_failed",
            "[1].user.email",
        ),
        (
            {"name": "E", "external_id": "u", "user": {"phone": "12"}},
            422,
            "validation_failed",
            "[1].user.phone",
        ),
        (
            {"name": "E", "external_id": "u", "user": {"timezone": "Mars/Olympus"}},
            422,
            "validation_failed",
            "[1].user.timezone",
        ),
        (
            {"name": "E", "external_id": "u", "user": {"locale": "not a tag"}},
            422,
            "validation_failed",
            "[1].user.locale",
        ),
        (
            {"name": "E", "external_id": "u", "created_at": "yesterday"},
            422,
            "validation_failed",
            "[1].created_at",
        ),
        ("not an object", 400, "parameter_invalid_format", "[1]"),
    ],
)
async def test_an_invalid_event_rejects_the_whole_request(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    event: Any,
    status: int,
    code: str,
    param: str,
) -> None:
    response = await client.post(
        "/api/client/events", json=[VALID_EVENT, event], headers=bearer(project.pk)
    )
    body = assert_problem(response, status, code)
    assert body["param"] == param
    assert param in [e["param"] for e in body["errors"]]
    await assert_nothing_written(services)


async def test_every_problem_is_listed(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "", "external_id": "u", "foo": 1, "user": {"email": "bad"}}]
    response = await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    problem = assert_problem(response, 400, "parameter_unknown")
    assert {e["param"] for e in problem["errors"]} == {"[0].foo", "[0].name", "[0].user.email"}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/identify", {"email": "a@example.com"}, 400, "parameter_missing"),
        ("/identify", [{"external_id": "u"}], 400, "parameter_invalid_format"),
        ("/identify", {"external_id": "u", "email": "a@"}, 422, "validation_failed"),
        ("/identify", {"external_id": "u", "timezone": "x" * 51}, 422, "validation_failed"),
        ("/identify", {"external_id": "u", "locale": "x" * 256}, 400, "parameter_invalid_format"),
        ("/alias", {"anonymous_id": "a"}, 400, "parameter_missing"),
        ("/alias", {"anonymous_id": "a", "external_id": "u", "x": 1}, 400, "parameter_unknown"),
        ("/devices", {"external_id": "u", "device_id": "d"}, 400, "parameter_missing"),
    ],
)
async def test_object_endpoints_validate(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    path: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    response = await client.post(f"/api/client{path}", json=body, headers=bearer(project.pk))
    assert_problem(response, status, code)
    await assert_nothing_written(services)


async def test_empty_and_oversized_arrays(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    empty = await client.post("/api/client/events", json=[], headers=bearer(project.pk))
    assert_problem(empty, 400, "parameter_invalid_empty")
    too_many = [VALID_EVENT] * 101
    response = await client.post("/api/client/events", json=too_many, headers=bearer(project.pk))
    assert_problem(response, 413, "payload_too_large")
    exactly = [{**VALID_EVENT, "message_id": f"m{i}"} for i in range(100)]
    ok = await client.post("/api/client/events", json=exactly, headers=bearer(project.pk))
    assert ok.status_code == 204


async def test_an_event_over_32_kb_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    big = {**VALID_EVENT, "data": {"blob": "x" * (32 * 1024)}}
    response = await client.post(
        "/api/client/events", json=[VALID_EVENT, big], headers=bearer(project.pk)
    )
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


async def test_a_body_over_1_mb_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    events = [{**VALID_EVENT, "data": {"blob": "x" * 20_000}} for _ in range(60)]
    response = await client.post("/api/client/events", json=events, headers=bearer(project.pk))
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


async def test_a_body_over_1_mb_without_content_length_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    async def chunks():  # streamed: no Content-Length header
        yield b"["
        for i in range(60):
            yield (b"," if i else b"") + b'{"name":"E","external_id":"u","data":{"b":"'
            yield b"x" * 20_000 + b'"}}'
        yield b"]"

    response = await client.post(
        "/api/client/events",
        content=chunks(),
        headers=bearer(project.pk, **{"Content-Type": "application/json"}),
    )
    assert_problem(response, 413, "payload_too_large")
    await assert_nothing_written(services)


async def test_malformed_json(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    response = await client.post(
        "/api/client/events",
        content=b'[{"name": "E",',
        headers=bearer(project.pk, **{"Content-Type": "application/json"}),
    )
    assert_problem(response, 400, "parameter_invalid_format")
    empty = await client.post(
        "/api/client/events",
        content=b"",
        headers=bearer(project.pk, **{"Content-Type": "application/json"}),
    )
    assert_problem(empty, 400, "parameter_missing")
    await assert_nothing_written(services)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type(
    client: httpx.AsyncClient, services: Services, project: Project, content_type: str | None
) -> None:
    headers = bearer(project.pk)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(
        "/api/client/events", content=b'[{"name":"E","external_id":"u"}]', headers=headers
    )
    body = assert_problem(response, 415, "parameter_invalid_format")
    assert body["param"] == "Content-Type"
    await assert_nothing_written(services)


async def test_json_content_type_with_charset_is_accepted(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await client.post(
        "/api/client/events",
        content=b'[{"name":"E","external_id":"u"}]',
        headers=bearer(project.pk, **{"Content-Type": "application/json; charset=utf-8"}),
    )
    assert response.status_code == 204


async def test_unsupported_version_header(client: httpx.AsyncClient, project: Project) -> None:
    response = await client.post(
        "/api/client/events",
        json=[VALID_EVENT],
        headers=bearer(project.pk, **{"Spotzee-Version": "latest"}),
    )
    assert_problem(response, 400, "version_unsupported")


async def test_unknown_route_and_bad_query_use_the_envelope(
    client: httpx.AsyncClient, project: Project
) -> None:
    assert_problem(await client.get("/api/client/nope"), 404, "resource_missing")
    response = await client.get("/api/client/users/u/events?limit=1000", headers=bearer(project.sk))
    assert_problem(response, 400, "parameter_invalid_format")
