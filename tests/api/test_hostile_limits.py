"""Each limit of docs/api.md "Limits", at the edge: on every route, then read back.

Classes (issue 18): nesting depth, timestamps at the calendar's edges, forged cursors,
gzip members, item and profile sizes, devices per profile, the schema's size, external
ids no URL can name. Errors and slow clients are in test_hostile_http.py.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services
from tidings.domain import limits
from tidings.store.tables import devices, profiles

DEEP = limits.MAX_DEPTH


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def nested(depth: int) -> str:
    """JSON text of an object ``depth`` levels deep (as text: any depth)."""
    return '{"a":' * (depth - 1) + '{"leaf":1}' + "}" * (depth - 1)


async def send(
    client: httpx.AsyncClient, method: str, path: str, key: str, body: str | bytes, **headers: str
) -> httpx.Response:
    auth = basic(key) if path.startswith("/v1") else bearer(key)
    content = body.encode() if isinstance(body, str) else body
    return await client.request(
        method,
        path,
        content=content,
        headers={**auth, "Content-Type": "application/json", **headers},
    )


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


def write_routes(project: Project, value: str) -> list[tuple[str, str, str, str]]:
    """(method, path, key, body) of every write route, with ``value`` as its free-form
    object(s)."""
    pk, sk = project.pk, project.sk
    return [
        ("POST", "/api/client/events", pk, f'[{{"name":"E","external_id":"u","data":{value}}}]'),
        (
            "POST",
            "/api/client/events",
            pk,
            f'[{{"name":"E","external_id":"u","user":{{"data":{value}}}}}]',
        ),
        ("POST", "/api/client/identify", pk, f'{{"external_id":"u","data":{value}}}'),
        ("PATCH", "/api/client/users", sk, f'[{{"external_id":"u","data":{value}}}]'),
        ("POST", "/v1/track", pk, f'{{"userId":"u","event":"E","properties":{value}}}'),
        ("POST", "/v1/track", pk, f'{{"userId":"u","event":"E","context":{value}}}'),
        ("POST", "/v1/identify", pk, f'{{"userId":"u","traits":{value}}}'),
        ("POST", "/v1/group", pk, f'{{"userId":"u","groupId":"g","traits":{value}}}'),
        (
            "POST",
            "/v1/batch",
            pk,
            f'{{"batch":[{{"type":"track","userId":"u","event":"E"}}],"context":{value}}}',
        ),
    ]


# -- 1. nesting depth ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [DEEP + 1, 950, 5000])
async def test_deeper_than_the_limit_is_refused_on_every_write_route(
    client: httpx.AsyncClient, services: Services, project: Project, depth: int
) -> None:
    for method, path, key, body in write_routes(project, nested(depth)):
        response = await send(client, method, path, key, body)
        problem = assert_problem(response, 400, "parameter_invalid_format")
        assert "nested" in problem["message"] and str(DEEP) in problem["message"], problem
    await drain(services)
    with services.db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar() == 0


async def test_the_depth_limit_itself_is_accepted_and_read_back(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for method, path, key, body in write_routes(project, nested(DEEP)):
        response = await send(client, method, path, key, body)
        if path == "/v1/group":  # stored one level down, so one level less
            assert_problem(response, 400, "parameter_invalid_format")
            body = body.replace(nested(DEEP), nested(DEEP - 1))
            response = await send(client, method, path, key, body)
        assert response.status_code < 300, (path, response.text)
    await drain(services)
    user = await client.get("/api/client/users/u", headers=bearer(project.sk))
    assert user.status_code == 200
    data = user.json()["data"]
    assert json.dumps(data["a"]).count("{") == DEEP - 1
    assert limits.json_problem(data) is None  # within the limit, the group's traits too
    assert (await client.get("/api/client/users/u/events", headers=bearer(project.sk))).is_success


@pytest.mark.parametrize("depth", [DEEP + 1, 5000])
async def test_a_deep_body_on_the_json_routes_of_fastapi_is_a_400(
    client: httpx.AsyncClient, project: Project, depth: int
) -> None:
    created = await client.post(
        "/api/client/lists", json={"name": "L", "type": "static"}, headers=bearer(project.sk)
    )
    list_id = created.json()["id"]
    deep_list = "[" * depth + "]" * depth
    for method, path, body in [
        ("POST", "/api/client/lists", f'{{"name":"x","type":"static","tags":{deep_list}}}'),
        ("PATCH", f"/api/client/lists/{list_id}", f'{{"name":{deep_list}}}'),
        ("POST", f"/api/client/lists/{list_id}/users", f'{{"external_ids":{deep_list}}}'),
        ("POST", "/api/client/lists", nested(depth)),
    ]:
        response = await send(client, method, path, project.sk, body)
        assert_problem(response, 400)


async def test_a_value_stored_deeper_than_the_parser_allows_is_read_back_pruned(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Written before the limit existed: every read of it answers 200."""
    assert (
        await send(client, "POST", "/api/client/identify", project.pk, '{"external_id":"old"}')
    ).status_code == 204
    await drain(services)
    created = await client.post(
        "/api/client/lists", json={"name": "L", "type": "static"}, headers=bearer(project.sk)
    )
    list_id = created.json()["id"]
    added = await client.post(
        f"/api/client/lists/{list_id}/users",
        json={"external_ids": ["old"]},
        headers=bearer(project.sk),
    )
    assert added.status_code == 200
    deep = '{"plan":"pro","deep":' + "[" * 3000 + "]" * 3000 + "}"
    with services.db.writer.begin() as conn:
        if services.db.writer.dialect.name == "postgresql":
            conn.execute(sa.text("UPDATE profiles SET data = CAST(:d AS jsonb)"), {"d": deep})
        else:
            conn.execute(sa.text("UPDATE profiles SET data = :d"), {"d": deep})
    for path in [
        "/api/client/users/old",
        "/api/client/users",
        "/api/client/users?q=old",
        f"/api/client/lists/{list_id}/users",
    ]:
        response = await client.get(path, headers=bearer(project.sk))
        assert response.status_code == 200, (path, response.text[:200])
    data = (await client.get("/api/client/users/old", headers=bearer(project.sk))).json()["data"]
    assert data["plan"] == "pro"
    assert "<nested too deeply>" in json.dumps(data)


# -- 2. timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at",
    [
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:30:00+00:31",
        "9999-12-31T23:00:00-01:00",
        "9999-12-31T23:59:59.999999-00:01",
    ],
)
async def test_a_timestamp_outside_the_calendar_in_utc_is_refused(
    client: httpx.AsyncClient, project: Project, created_at: str
) -> None:
    body = json.dumps([{"name": "E", "external_id": "u", "created_at": created_at}])
    problem = assert_problem(
        await send(client, "POST", "/api/client/events", project.pk, body), 422
    )
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z" in problem["message"]
    body = json.dumps({"userId": "u", "event": "E", "timestamp": created_at})
    assert_problem(await send(client, "POST", "/v1/track", project.pk, body), 422)


@pytest.mark.parametrize(
    "created_at",
    ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z", "0001-01-01T00:00:00-01:00"],
)
async def test_a_timestamp_at_the_edge_is_accepted_and_read_back(
    client: httpx.AsyncClient, services: Services, project: Project, created_at: str
) -> None:
    body = json.dumps([{"name": "E", "external_id": "u", "created_at": created_at}])
    assert (await send(client, "POST", "/api/client/events", project.pk, body)).status_code == 204
    await drain(services)
    timeline = await client.get("/api/client/users/u/events", headers=bearer(project.sk))
    assert timeline.status_code == 200
    shown = timeline.json()["results"][0]["created_at"]
    assert shown[:4] in ("0001", "9999")


@pytest.mark.parametrize(
    ("timestamp", "sent_at"),
    [
        ("9999-12-31T23:59:59Z", "2000-01-01T00:00:00Z"),  # skew would pass 9999
        ("0001-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),  # and before year 1
    ],
)
async def test_skew_correction_never_leaves_the_range(
    client: httpx.AsyncClient, services: Services, project: Project, timestamp: str, sent_at: str
) -> None:
    body = json.dumps({"userId": "u", "event": "E", "timestamp": timestamp, "sentAt": sent_at})
    assert (await send(client, "POST", "/v1/track", project.pk, body)).status_code == 200
    await drain(services)
    timeline = await client.get("/api/client/users/u/events", headers=bearer(project.sk))
    assert timeline.status_code == 200
    assert timeline.json()["results"][0]["created_at"][:4] == timestamp[:4]


# -- 3. forged cursors --------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


forged_cursors = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=80
) | st.sampled_from(
    [
        _b64(b'["n", 99999999999999999999999, "a"]'),
        _b64(b'[-99999999999999999999999, "a"]'),
        _b64(b'["n", 1, "a\\u0000"]'),
        _b64(b'["p", 1]'),
        _b64(b'["n", "1", 1]'),
        _b64(b'["trait", "", "a", "\\u0000"]'),
        _b64(b'["event", "", "' + b"p" * 600 + b'", "string"]'),
        _b64(b"[" * 3000 + b"]" * 3000),
        "A" * 500,
    ]
)


async def test_forged_cursors_answer_400_on_every_paged_route(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = json.dumps({"external_id": "u", "data": {"a": 1}})
    assert (await send(client, "POST", "/api/client/identify", project.pk, body)).status_code == 204
    await drain(services)
    created = await client.post(
        "/api/client/lists", json={"name": "L", "type": "static"}, headers=bearer(project.sk)
    )
    list_id = created.json()["id"]
    paged = [
        "/api/client/users",
        "/api/client/users/u/events",
        "/api/client/lists",
        f"/api/client/lists/{list_id}/users",
        "/api/client/schema",
    ]
    seen: list[str] = []

    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cursor=forged_cursors)
    def cases(cursor: str) -> None:
        seen.append(cursor)

    cases()
    for cursor in seen:
        for path in paged:
            response = await client.get(path, params={"cursor": cursor}, headers=bearer(project.sk))
            if response.status_code == 200:
                continue  # a cursor that happens to be well formed: a (maybe empty) page
            body = assert_problem(response, 400, "parameter_invalid_format")
            assert body.get("param") == "cursor", (path, cursor, body)


async def test_every_page_of_the_schema_is_reached_by_its_cursor(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    data = {f"k{i}": i for i in range(25)}
    body = json.dumps({"external_id": "u", "data": data})
    assert (await send(client, "POST", "/api/client/identify", project.pk, body)).status_code == 204
    await drain(services)
    paths: list[str] = []
    cursor = None
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/client/schema", params=params, headers=bearer(project.sk))
        assert page.status_code == 200
        paths += [row["path"] for row in page.json()["results"]]
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert sorted(paths) == sorted(data)


async def test_the_schema_records_at_most_the_limit_of_paths(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_SCHEMA_PATHS", 5)
    first = json.dumps({"external_id": "u", "data": {"a": 1, "b": 2, "c": 3}})
    assert (
        await send(client, "POST", "/api/client/identify", project.pk, first)
    ).status_code == 204
    await drain(services)
    more = json.dumps([{"name": "E", "external_id": "u", "data": {f"p{i}": i for i in range(9)}}])
    assert (await send(client, "POST", "/api/client/events", project.pk, more)).status_code == 204
    again = json.dumps({"external_id": "u", "data": {"a": "now a string", "z": 1}})
    assert (
        await send(client, "POST", "/api/client/identify", project.pk, again)
    ).status_code == 204
    await drain(services)
    page = await client.get("/api/client/schema", headers=bearer(project.sk))
    rows = page.json()["results"]
    assert len(rows) == 5
    assert {r["path"] for r in rows if r["source"] == "trait"} == {"a", "b", "c"}
    # The paths not indexed are still stored with their events and profiles.
    timeline = await client.get("/api/client/users/u/events", headers=bearer(project.sk))
    assert timeline.json()["results"][0]["data"] == {f"p{i}": i for i in range(9)}
    user = await client.get("/api/client/users/u", headers=bearer(project.sk))
    assert user.json()["data"]["z"] == 1


# -- 4. gzip --------------------------------------------------------------------------------


async def test_gzip_up_to_the_member_limit_is_read_one_more_is_refused(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = json.dumps({"userId": "u", "event": "E"}).encode()
    members = [gzip.compress(body[:1])] + [gzip.compress(b"") for _ in range(14)]
    members.append(gzip.compress(body[1:]))
    ok = await send(
        client, "POST", "/v1/track", project.pk, b"".join(members), **{"Content-Encoding": "gzip"}
    )
    assert ok.status_code == 200, ok.text
    members.insert(1, gzip.compress(b""))
    refused = await send(
        client, "POST", "/v1/track", project.pk, b"".join(members), **{"Content-Encoding": "gzip"}
    )
    problem = assert_problem(refused, 400)
    assert str(limits.MAX_GZIP_MEMBERS) in problem["message"]


async def test_thousands_of_empty_gzip_members_are_refused(
    client: httpx.AsyncClient, project: Project
) -> None:
    bomb = gzip.compress(b"") * 20_000  # ~400 KB, under the body limit
    response = await send(
        client, "POST", "/v1/batch", project.pk, bomb, **{"Content-Encoding": "gzip"}
    )
    assert_problem(response, 400)


# -- 5. sizes of items, profiles and devices --------------------------------------------------


def _over(limit: int) -> str:
    return "x" * (limit + 1)


async def test_one_item_over_32_kb_is_refused_on_every_write_route(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    big = json.dumps({"blob": _over(limits.MAX_ITEM_BYTES)})
    pk, sk = project.pk, project.sk
    for method, path, key, body in [
        ("POST", "/api/client/events", pk, f'[{{"name":"E","external_id":"u","data":{big}}}]'),
        ("POST", "/api/client/identify", pk, f'{{"external_id":"u","data":{big}}}'),
        ("PATCH", "/api/client/users", sk, f'[{{"external_id":"u","data":{big}}}]'),
        ("POST", "/v1/identify", pk, f'{{"userId":"u","traits":{big}}}'),
        (
            "POST",
            "/api/client/devices",
            pk,
            json.dumps(
                {
                    "external_id": "u",
                    "device_id": "d",
                    "os": "iOS",
                    "model": "m",
                    "app_build": "1",
                    "app_version": "1",
                    "sdk_version": "1",
                    "token": "t" * 4096,
                    "os_version": "1",
                    "extra": _over(limits.MAX_ITEM_BYTES),
                }
            ),
        ),
    ]:
        response = await send(client, method, path, key, body)
        problem = assert_problem(response, 413, "payload_too_large")
        assert "32 KB" in problem["message"], (path, problem)
    batch = await send(
        client,
        "POST",
        "/api/client/users/batch",
        sk,
        f'[{{"external_id":"u","data":{big}}},{{"external_id":"v"}}]',
    )
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["error"]["code"] == "payload_too_large" and "32 KB" in first["error"]["message"]
    assert "error" not in second
    await drain(services)
    assert (await client.get("/api/client/users/u", headers=bearer(sk))).status_code == 404


async def test_a_profile_stops_growing_at_the_traits_limit(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_PROFILE_DATA_BYTES", 4000)
    for i in range(6):  # each 1 KB, under the item limit
        body = json.dumps({"external_id": "u", "data": {f"k{i}": "v" * 1000}})
        assert (
            await send(client, "POST", "/api/client/identify", project.pk, body)
        ).status_code == 204
    await drain(services)
    data = (await client.get("/api/client/users/u", headers=bearer(project.sk))).json()["data"]
    assert set(data) == {"k0", "k1", "k2"}  # a fourth would pass 4,000 bytes
    # Updates that do not grow it still apply; removing a key makes room again.
    body = json.dumps({"external_id": "u", "data": {"k0": None, "k5": "w" * 1000}})
    assert (await send(client, "POST", "/api/client/identify", project.pk, body)).status_code == 204
    await drain(services)
    data = (await client.get("/api/client/users/u", headers=bearer(project.sk))).json()["data"]
    assert set(data) == {"k1", "k2", "k5"}


async def test_a_profile_keeps_its_most_recent_devices(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_DEVICES_PER_PROFILE", 3)
    for i in range(5):
        body = json.dumps(
            {
                "external_id": "u",
                "device_id": f"d{i}",
                "os": "iOS",
                "model": "m",
                "app_build": "1",
                "app_version": "1",
            }
        )
        assert (
            await send(client, "POST", "/api/client/devices", project.pk, body)
        ).status_code == 204
        await drain(services)  # one batch each: distinct update times
    user = (await client.get("/api/client/users/u", headers=bearer(project.sk))).json()
    assert [d["device_id"] for d in user["devices"]] == ["d4", "d3", "d2"]
    with services.db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(devices)).scalar() == 3


@pytest.mark.parametrize("field", ["os", "os_version", "app_build", "app_version", "sdk_version"])
async def test_device_fields_are_limited_to_what_their_columns_hold(
    client: httpx.AsyncClient, project: Project, field: str
) -> None:
    device: dict[str, Any] = {
        "external_id": "u",
        "device_id": "d",
        "os": "iOS",
        "model": "m",
        "app_build": "1",
        "app_version": "1",
    }
    device[field] = "x" * 65
    response = await send(client, "POST", "/api/client/devices", project.pk, json.dumps(device))
    assert "64 characters" in assert_problem(response, 400)["message"]


# -- 7. external ids no URL can name ----------------------------------------------------------


@pytest.mark.parametrize("external_id", ["team/42", "/", ".", ".."])
async def test_an_external_id_no_url_can_name_is_refused_on_every_route(
    client: httpx.AsyncClient, services: Services, project: Project, external_id: str
) -> None:
    ext = json.dumps(external_id)
    pk, sk = project.pk, project.sk
    for method, path, key, body in [
        ("POST", "/api/client/events", pk, f'[{{"name":"E","external_id":{ext}}}]'),
        ("POST", "/api/client/identify", pk, f'{{"external_id":{ext}}}'),
        ("POST", "/api/client/alias", pk, f'{{"anonymous_id":"a","external_id":{ext}}}'),
        (
            "POST",
            "/api/client/devices",
            pk,
            json.dumps(
                {
                    "external_id": external_id,
                    "device_id": "d",
                    "os": "iOS",
                    "model": "m",
                    "app_build": "1",
                    "app_version": "1",
                }
            ),
        ),
        ("PATCH", "/api/client/users", sk, f'[{{"external_id":{ext}}}]'),
        ("POST", "/v1/track", pk, f'{{"userId":{ext},"event":"E"}}'),
        ("POST", "/v1/identify", pk, f'{{"userId":{ext}}}'),
        ("POST", "/v1/alias", pk, f'{{"previousId":"a","userId":{ext}}}'),
    ]:
        response = await send(client, method, path, key, body)
        problem = assert_problem(response, 400, "parameter_invalid_format")
        assert "URL" in problem["message"], (path, problem)
    batch = await send(client, "POST", "/api/client/users/batch", sk, f'[{{"external_id":{ext}}}]')
    assert batch.json()["results"][0]["error"]["code"] == "parameter_invalid_format"
    await drain(services)
    with services.db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar() == 0


async def test_ids_that_look_like_paths_but_are_not_still_work(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for external_id in ["a.b", "...", "%2F", "a?b#c", "é ü"]:
        body = json.dumps({"external_id": external_id})
        assert (
            await send(client, "POST", "/api/client/identify", project.pk, body)
        ).status_code == 204
    await drain(services)
    from urllib.parse import quote

    for external_id in ["a.b", "...", "%2F", "a?b#c", "é ü"]:
        path = f"/api/client/users/{quote(external_id, safe='')}"
        response = await client.get(path, headers=bearer(project.sk))
        assert response.status_code == 200 and response.json()["external_id"] == external_id
