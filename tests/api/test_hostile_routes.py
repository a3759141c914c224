"""Issue 18's rules on every route of the app, found from its OpenAPI document.

- Every paged route (a GET operation with a ``cursor`` query parameter) answers a forged,
  oversized or wrongly typed cursor with ``400 parameter_invalid_format`` on ``cursor``
  (its cursor is decoded by ``store/cursors.py``).
- Every operation with a request body refuses a body nested past the documented depth or
  holding a NUL character with a 4xx problem (never a 500), and stores nothing.

A new route is covered as soon as it is in the OpenAPI document; a new path parameter
must be added to :func:`_fill` (the test fails until it is).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tests.messaging.helpers import EMAIL_TEMPLATE
from tidings.bootstrap import Services
from tidings.domain import limits
from tidings.store.tables import metadata

API = "/api/client"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE_CURSORS = [
    "!!not-base64!!",  # outside the alphabet
    "A" * 5000,  # over the length limit
    "Zm9v",  # base64 of 'foo': not JSON
    _b64(b"b:5"),  # the journeys' old format
    _b64(b'"x"'),  # JSON, not an array
    _b64(b"{}"),
    _b64(b"[99999999999999999999999]"),  # past 64 bits
    _b64(b'["n", 99999999999999999999999, "a"]'),
    _b64(b'["n", "1", 1]'),  # wrongly typed
    _b64(b"[1.5]"),
    _b64(b'["n", 1, "a\\u0000"]'),  # a NUL
    _b64(b"[" * 3000 + b"]" * 3000),  # nested past the parser's stack
    _b64(b'["' + b"p" * 600 + b'"]'),  # a string over 512 characters
]

# Routes that existed when issue 18 was fixed, and those merged since: discovery must
# find at least these (a renamed route must be renamed here too).
KNOWN_PAGED = {
    "/api/client/users",
    "/api/client/users/{external_id}/events",
    "/api/client/lists",
    "/api/client/lists/{id}/users",
    "/api/client/schema",
    "/api/client/journeys",
    "/api/client/campaigns",
    "/api/client/campaigns/{id}/sends",
    "/api/client/templates",
    "/api/client/providers",
    "/api/client/notifications",
    "/api/client/events",
}
KNOWN_BODIES = {
    ("POST", "/api/client/journeys"),
    ("PATCH", "/api/client/journeys/{id}"),
    ("PUT", "/api/client/journeys/{id}/steps"),
    ("POST", "/api/client/journeys/{id}/trigger"),
    ("POST", "/api/client/journeys/{id}/simulate"),
    ("POST", "/api/client/campaigns"),
    ("PATCH", "/api/client/campaigns/{id}"),
    ("POST", "/api/client/campaigns/{id}/trigger"),
    ("POST", "/api/client/templates"),
    ("PATCH", "/api/client/templates/{id}"),
    ("POST", "/api/client/templates/{id}/preview"),
    ("POST", "/api/client/templates/{id}/proof"),
    ("POST", "/api/client/providers"),
    ("PATCH", "/api/client/providers/{id}"),
    ("POST", "/api/client/subscriptions"),
    ("PATCH", "/api/client/subscriptions/{id}"),
    ("POST", "/api/client/subscriptions/batch"),
    ("PATCH", "/api/client/subscriptions/me"),
    ("PATCH", "/api/client/users/{external_id}/subscriptions"),
    ("PUT", "/api/client/notifications/{notification_id}"),
}


# Values for query parameters a route needs (it answers 400 without them), sent to every
# paged route that declares them.
QUERY_VALUES = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


def _query(operation: dict[str, Any]) -> dict[str, str]:
    names = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"}
    return {name: value for name, value in QUERY_VALUES.items() if name in names}


@dataclass
class World:
    """One of each resource, so that a path parameter names a real row (a 404 would
    answer before the cursor or the body is looked at)."""

    ids: dict[str, int]
    token: str


async def _post(client: httpx.AsyncClient, project: Project, path: str, body: Any) -> Any:
    response = await client.post(API + path, json=body, headers=bearer(project.sk))
    assert response.status_code in (200, 201), (path, response.text)
    return response.json()


async def _world(client: httpx.AsyncClient, services: Services, project: Project) -> World:
    identify = await client.post(
        f"{API}/identify", json={"external_id": "u", "data": {"a": 1}}, headers=bearer(project.pk)
    )
    assert identify.status_code == 204, identify.text
    await drain(services)
    provider = await _post(
        client, project, "/providers", {"type": "logger", "name": "log", "group": "email"}
    )
    campaign = await _post(
        client, project, "/campaigns", {"type": "trigger", "name": "C", "channel": "email"}
    )
    template = await _post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": "en", "data": EMAIL_TEMPLATE},
    )
    subscription = await _post(client, project, "/subscriptions", {"name": "W", "channel": "email"})
    journey = await _post(client, project, "/journeys", {"name": "J"})
    listed = await _post(client, project, "/lists", {"name": "L", "type": "static"})
    session = await _post(client, project, "/users/u/sessions", {})
    return World(
        ids={
            "providers": provider["id"],
            "campaigns": campaign["id"],
            "templates": template["id"],
            "subscriptions": subscription["id"],
            "journeys": journey["id"],
            "lists": listed["id"],
        },
        token=session["token"],
    )


def _fill(path: str, world: World) -> str:
    """``path`` with its parameters naming the world's rows."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "external_id":
            return "u"
        if name == "notification_id":
            return "1"  # none exists: the body is checked before the lookup
        if name == "id":
            resource = path.removeprefix(API + "/").split("/", 1)[0]
            assert resource in world.ids, f"no {resource} in the test's world: add one"
            return str(world.ids[resource])
        raise AssertionError(f"{path}: a new path parameter '{name}': teach _fill() about it")

    return re.sub(r"\{([^}]+)\}", value, path)


def _headers(path: str, project: Project, world: World) -> dict[str, str]:
    if path.startswith("/v1"):
        key = base64.b64encode(f"{project.pk}:".encode()).decode()
        return {"Authorization": f"Basic {key}"}
    if path == f"{API}/subscriptions/me":
        return bearer(project.pk, **{"X-Spotzee-User-Token": world.token})
    return bearer(project.sk, **{"X-External-Id": "u"})


async def _openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, operation))
    return found


def _assert_problem(response: httpx.Response, where: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json"), (
        where,
        response.status_code,
        response.text[:300],
    )
    body: dict[str, Any] = response.json()
    assert body["request_id"] == response.headers["x-request-id"], where
    return body


def _row_counts(services: Services) -> dict[str, int]:
    with services.db.reader.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
        }


# -- cursors -------------------------------------------------------------------------------------


async def test_every_paged_route_answers_a_hostile_cursor_with_400(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    world = await _world(client, services, project)
    paged = [
        (path, operation)
        for method, path, operation in _operations(await _openapi(client))
        if method == "GET"
        and any(
            p.get("name") == "cursor" and p.get("in") == "query"
            for p in operation.get("parameters", [])
        )
    ]
    assert {path for path, _ in paged} >= KNOWN_PAGED, KNOWN_PAGED - {p for p, _ in paged}
    for path, operation in paged:
        url = _fill(path, world)
        headers = _headers(path, project, world)
        query = _query(operation)
        first = await client.get(url, params=query, headers=headers)  # works without a cursor
        assert first.status_code == 200, (path, first.text)
        for cursor in HOSTILE_CURSORS:
            response = await client.get(url, params={**query, "cursor": cursor}, headers=headers)
            where = (path, cursor[:60])
            assert response.status_code == 400, (where, response.text[:300])
            body = _assert_problem(response, where)
            assert body["code"] == "parameter_invalid_format", (where, body)
            assert body.get("param") == "cursor", (where, body)


async def test_a_cursor_made_for_another_route_is_refused_or_read_as_a_position(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """A cursor of one paged route sent to another: well formed for the codec, so either
    a 400 on ``cursor`` or a page; never a 500."""
    world = await _world(client, services, project)
    from tidings.store import cursors

    made = [
        cursors.encode(5),
        cursors.encode("n", 5),
        cursors.encode("b", 5),
        cursors.encode("n", 1, "u"),
        cursors.encode(1, "digest", "desc", "n", 1, "evt_1"),
    ]
    for method, path, operation in _operations(await _openapi(client)):
        names = {p.get("name") for p in operation.get("parameters", [])}
        if method != "GET" or "cursor" not in names:
            continue
        for cursor in made:
            response = await client.get(
                _fill(path, world),
                params={**_query(operation), "cursor": cursor},
                headers=_headers(path, project, world),
            )
            assert response.status_code in (200, 400), (path, cursor, response.text[:300])
            if response.status_code == 400:
                assert _assert_problem(response, path).get("param") == "cursor"


# -- bodies --------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + '{"leaf":1}' + "}" * (depth - 1)


DEEP_BODIES = {
    "deep_5000": _nested(5000),
    "deep_past_body_limit": _nested(limits.MAX_BODY_DEPTH + 1),
    "deep_array_field": '{"name":' + "[" * 5000 + "]" * 5000 + "}",
}
# Routes that answer 200 with one result per item, each item refused on its own.
PER_ITEM_ANSWERS = {"/api/client/users/batch"}
NUL_BODIES = {
    "nul_string": '{"name":"a\\u0000b"}',
    "nul_key": '{"a\\u0000":1}',
    "nul_nested": '{"data":{"x":["ok","\\u0000"]}}',
    "nul_array": '[{"subscription_id":1,"state":1,"x":"\\u0000"}]',
}


@pytest.mark.parametrize("kind", ["deep", "nul"])
async def test_every_body_refuses_deep_json_and_nul_characters(
    client: httpx.AsyncClient, services: Services, project: Project, kind: str
) -> None:
    world = await _world(client, services, project)
    await drain(services)
    with_body = [
        (method, path)
        for method, path, operation in _operations(await _openapi(client))
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert set(with_body) >= KNOWN_BODIES, KNOWN_BODIES - set(with_body)
    bodies = DEEP_BODIES if kind == "deep" else NUL_BODIES
    before = _row_counts(services)
    for method, path in with_body:
        for name, body in bodies.items():
            response = await client.request(
                method,
                _fill(path, world),
                content=body.encode(),
                headers={**_headers(path, project, world), "Content-Type": "application/json"},
            )
            where = (method, path, name)
            if path in PER_ITEM_ANSWERS and response.status_code == 200:
                results = response.json()["results"]
                assert results and all(r.get("error") for r in results), (where, results)
                continue
            assert 400 <= response.status_code < 500, (where, response.text[:300])
            problem = _assert_problem(response, where)
            if (method, path) in KNOWN_BODIES and response.status_code != 413:
                # the rule of issue 18, by name (a route with a smaller body limit may
                # answer 413 first)
                assert response.status_code == 400, (where, problem)
                text = json.dumps(problem)
                word = "nested" if kind == "deep" else "NUL"
                assert word in text, (where, problem)
    await drain(services)
    assert _row_counts(services) == before


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/templates/{templates}/preview", "user"),
        ("POST", "/templates", "data"),
        ("PATCH", "/templates/{templates}", "data"),
        ("PATCH", "/providers/{providers}", "data"),
        ("POST", "/campaigns/{campaigns}/trigger", "user"),
    ],
)
async def test_a_free_form_object_past_32_levels_is_refused_at_the_field(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    method: str,
    path: str,
    field: str,
) -> None:
    """Within the whole body's limit, the free-form object itself (``data``) is held to
    32 levels, like ``data`` on the ingest routes; at 32 it is read."""
    world = await _world(client, services, project)
    url = API + path.format(**world.ids)
    headers = {**bearer(project.sk), "Content-Type": "application/json"}

    def body(depth: int) -> bytes:
        value = _nested(depth)
        if field == "user":  # 'user' holds 'data': its data may have 32 levels
            value = f'{{"external_id":"u","data":{value}}}'
        return f'{{"{field}":{value}}}'.encode()

    response = await client.request(
        method, url, content=body(limits.MAX_DEPTH + 1), headers=headers
    )
    problem = _assert_problem(response, path)
    assert response.status_code == 400, problem
    assert "nested deeper than" in json.dumps(problem), problem
    assert str(limits.MAX_DEPTH) in json.dumps(problem), problem
    at_limit = await client.request(method, url, content=body(limits.MAX_DEPTH), headers=headers)
    assert at_limit.status_code < 500, at_limit.text
    assert "nested" not in at_limit.text, at_limit.text


async def test_the_new_routes_page_forward_and_back_with_the_codecs_cursors(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """The cursors these routes now make are read back by them: every row once, in order,
    forward by ``nextCursor`` (and back by ``prevCursor`` where the route gives one)."""
    for n in range(3):
        await _post(client, project, "/journeys", {"name": f"J{n}"})
        await _post(
            client, project, "/campaigns", {"type": "trigger", "name": f"C{n}", "channel": "email"}
        )
    for path in ("/journeys", "/campaigns"):
        seen: list[int] = []
        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = await client.get(API + path, params=params, headers=bearer(project.sk))
            assert page.status_code == 200, page.text
            body = page.json()
            pages.append(body)
            seen += [row["id"] for row in body["results"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        assert seen == sorted(seen, reverse=True) and len(seen) == 3, (path, seen)
        if path != "/journeys":
            continue  # the messaging routes' prevCursor restarts at the page's first row
        back = pages[-1]["prevCursor"]
        assert back is not None, path
        previous = await client.get(
            API + path, params={"limit": 1, "cursor": back}, headers=bearer(project.sk)
        )
        assert previous.status_code == 200, previous.text
        assert [row["id"] for row in previous.json()["results"]] == [seen[1]], path
