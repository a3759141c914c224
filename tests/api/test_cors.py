"""CORS: web pages on other origins may call the public-key routes, and only those; a
project may restrict its public key to a list of origins; a secret key sent from a page
is refused. (The same in a real browser: tests/browser/.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import (
    Project,
    bearer,
    create_project,
    drain,
    make_services,
    make_settings,
)
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.store.tables import events

PAGE = "http://shop.example.com:8080"
REQUIRED_HEADERS = [
    "authorization",
    "content-type",
    "spotzee-version",
    "x-spotzee-client-type",
    "idempotency-key",
    "x-anonymous-id",
    "x-external-id",
    "x-spotzee-user-token",
    "x-tidings-user-token",
]
EVENT = [{"name": "Viewed", "anonymous_id": "anon-1"}]

# Routes a public key may call, by path rule: those of in-app notifications and the
# preference centre get CORS whether or not they exist yet.
PUBLIC_ROUTES = [
    ("POST", "/api/client/events"),
    ("POST", "/api/client/identify"),
    ("POST", "/api/client/alias"),
    ("POST", "/api/client/devices"),
    ("GET", "/api/client/notifications"),
    ("PUT", "/api/client/notifications/17"),
    ("GET", "/api/client/users/me"),
    ("PATCH", "/api/client/subscriptions/me"),
    ("POST", "/v1/t"),
    ("POST", "/v1/batch"),
    ("GET", "/v1/projects/pk_x/settings"),
    ("GET", "/sourceConfig/"),
]
SECRET_ROUTES = [
    ("GET", "/api/client/users/u_1"),
    ("PATCH", "/api/client/users"),
    ("POST", "/api/client/users/batch"),
    ("GET", "/api/client/users/u_1/events"),
    ("GET", "/api/client/lists"),
]


def preflight(client: httpx.AsyncClient, path: str, method: str, origin: str = PAGE) -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,spotzee-version",
        },
    )


def stored_names(services: Services) -> list[str]:
    with services.db.reader.connect() as conn:
        return list(conn.execute(sa.select(events.c.name).order_by(events.c.name)).scalars())


async def send(
    client: httpx.AsyncClient, key: str, origin: str | None = PAGE, body: Any = None
) -> httpx.Response:
    headers = bearer(key, **({"Origin": origin} if origin else {}))
    return await client.post("/api/client/events", json=body or EVENT, headers=headers)


def assert_cors(response: httpx.Response, origin: str = PAGE) -> None:
    assert response.headers["access-control-allow-origin"] == origin
    assert "X-Request-Id" in response.headers["access-control-expose-headers"]
    assert "Origin" in response.headers["vary"]


def assert_no_cors(response: httpx.Response) -> None:
    assert not any(name.startswith("access-control-") for name in response.headers), dict(
        response.headers
    )


@pytest.mark.parametrize(("method", "path"), PUBLIC_ROUTES)
async def test_a_preflight_of_a_public_route_is_answered(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await preflight(client, path, method)
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    assert method in response.headers["access-control-allow-methods"]
    allowed = [
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    ]
    assert set(REQUIRED_HEADERS) <= set(allowed)
    assert int(response.headers["access-control-max-age"]) > 0
    assert response.content == b""


@pytest.mark.parametrize(("method", "path"), SECRET_ROUTES)
async def test_secret_key_routes_answer_no_preflight_and_send_no_cors_headers(
    client: httpx.AsyncClient, project: Project, method: str, path: str
) -> None:
    response = await preflight(client, path, method)
    assert response.status_code in (404, 405)
    assert_no_cors(response)
    actual = await client.request(
        method, path, headers=bearer(project.sk, Origin=PAGE), json=[] if method != "GET" else None
    )
    assert_no_cors(actual)


async def test_answers_to_a_page_carry_cors_headers_errors_included(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    ok = await send(client, project.pk)
    assert ok.status_code == 204, ok.text
    assert_cors(ok)
    invalid = await send(client, project.pk, body=[{"anonymous_id": "a"}])  # no name
    assert invalid.status_code in (400, 422)
    assert_cors(invalid)
    assert invalid.json()["request_id"] == invalid.headers["x-request-id"]
    unknown = await send(client, "pk_unknown")
    assert unknown.status_code == 401
    assert_cors(unknown)
    await drain(services)
    assert stored_names(services) == ["Viewed"]


async def test_requests_without_an_origin_get_no_cors_headers(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await send(client, project.pk, origin=None)
    assert response.status_code == 204
    assert_no_cors(response)


async def test_a_secret_key_sent_from_a_page_is_refused_without_cors_headers(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    refused = await send(client, project.sk)
    assert refused.status_code == 403
    assert refused.json()["code"] == "secret_key_in_browser"
    assert_no_cors(refused)
    segment = await client.post(
        "/v1/t",
        content=json.dumps({"writeKey": project.sk, "event": "Viewed", "anonymousId": "a"}),
        headers={"Content-Type": "text/plain", "Origin": PAGE},
    )
    assert segment.status_code == 403
    assert_no_cors(segment)
    settings = await client.get(f"/v1/projects/{project.sk}/settings", headers={"Origin": PAGE})
    assert settings.status_code == 403
    assert_no_cors(settings)
    await drain(services)
    assert stored_names(services) == []
    # A server (no Origin) may use its secret key on the ingest routes.
    assert (await send(client, project.sk, origin=None)).status_code == 204


async def test_a_project_restricted_to_some_origins_refuses_the_others(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    services.projects.set_allowed_origins(
        project.id, ("https://shop.example.com", "https://*.example.org")
    )
    for origin in (
        "https://shop.example.com",
        "https://shop.example.com:443",
        "https://a.example.org",
    ):
        ok = await send(
            client, project.pk, origin=origin, body=[{"name": origin, "anonymous_id": "a"}]
        )
        assert ok.status_code == 204, (origin, ok.text)
        assert (await preflight(client, "/api/client/events", "POST", origin)).status_code == 204
    for origin in (
        "https://evil.example.com",
        "http://shop.example.com",
        "https://example.org",
        "null",
    ):
        refused = await send(
            client, project.pk, origin=origin, body=[{"name": "no", "anonymous_id": "a"}]
        )
        assert refused.status_code == 403, origin
        body = refused.json()
        assert body["code"] == "origin_not_allowed" and origin in body["message"]
        assert_cors(refused, origin)  # the page can read why
        blocked = await preflight(client, "/api/client/events", "POST", origin)
        assert blocked.status_code == 403
        assert blocked.json()["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in blocked.headers
    segment = await client.post(
        "/v1/t",
        content=json.dumps({"writeKey": project.pk, "event": "no", "anonymousId": "a"}),
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example.com"},
    )
    assert segment.status_code == 403 and segment.json()["code"] == "origin_not_allowed"
    # Tidings' own pages (same origin) and servers (no Origin) are not restricted.
    assert (
        await send(
            client,
            project.pk,
            origin="http://tidings.test",
            body=[{"name": "own", "anonymous_id": "a"}],
        )
    ).status_code == 204
    assert (
        await send(client, project.pk, origin=None, body=[{"name": "server", "anonymous_id": "a"}])
    ).status_code == 204
    await drain(services)
    assert stored_names(services) == sorted(
        [
            "https://shop.example.com",
            "https://shop.example.com:443",
            "https://a.example.org",
            "own",
            "server",
        ]
    )
    services.projects.set_allowed_origins(project.id, None)  # any origin again
    assert (await send(client, project.pk, origin="https://evil.example.com")).status_code == 204


async def test_a_preflight_is_refused_only_when_no_project_allows_the_origin(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    other = create_project(services)
    services.projects.set_allowed_origins(project.id, ("https://a.example.com",))
    # The other project allows any origin, and a preflight names no project.
    assert (
        await preflight(client, "/api/client/events", "POST", "https://b.example.com")
    ).status_code == 204
    refused = await send(client, project.pk, origin="https://b.example.com")
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    assert (await send(client, other.pk, origin="https://b.example.com")).status_code == 204
    services.projects.set_allowed_origins(other.id, ("https://c.example.com",))
    blocked = await preflight(client, "/api/client/events", "POST", "https://b.example.com")
    assert blocked.status_code == 403
    for origin in ("https://a.example.com", "https://c.example.com"):
        assert (await preflight(client, "/v1/t", "POST", origin)).status_code == 204


async def test_analytics_js_settings_name_this_server(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    response = await client.get(f"/v1/projects/{project.pk}/settings", headers={"Origin": PAGE})
    assert response.status_code == 200, response.text
    assert_cors(response)
    segment = response.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == project.pk
    assert segment["apiHost"] == "tidings.test/v1"
    assert segment["protocol"] == "http"
    assert list(response.json()["integrations"]) == ["Segment.io"]  # no device-mode code
    assert response.json()["metrics"]["sampleRate"] == 0
    assert "max-age" in response.headers["cache-control"]
    missing = await client.get("/v1/projects/pk_nope/settings", headers={"Origin": PAGE})
    assert missing.status_code == 404 and missing.json()["code"] == "resource_missing"
    assert_cors(missing)
    services.projects.set_allowed_origins(project.id, ("https://elsewhere.example.com",))
    refused = await client.get(f"/v1/projects/{project.pk}/settings", headers={"Origin": PAGE})
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    services.projects.revoke_key(key=project.pk)
    revoked = await client.get(f"/v1/projects/{project.pk}/settings")
    assert revoked.status_code == 404


async def test_a_rate_limited_page_can_read_the_429_and_when_to_retry(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path, rate_limit_per_key=1, rate_limit_burst=1))
    services.start()
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False, clock=lambda: 1000.0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
            assert (await send(c, project.pk)).status_code == 204
            limited = await send(c, project.pk)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert_cors(limited)
        assert "Retry-After" in limited.headers["access-control-expose-headers"]
    finally:
        services.stop()


async def test_a_changed_list_applies_once_the_cached_key_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed origins come with the key (one cache read per key, as for revocation)."""
    services = make_services(make_settings(tmp_path, key_cache_ttl=60))
    services.start()
    now = [1000.0]
    monkeypatch.setattr("tidings.api.auth.time.monotonic", lambda: now[0])
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
            assert (await send(c, project.pk)).status_code == 204
            services.projects.set_allowed_origins(project.id, ("https://only.example.com",))
            assert (await send(c, project.pk)).status_code == 204  # the cached answer
            now[0] += 61
            refused = await send(c, project.pk)
        assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    finally:
        services.stop()


async def test_rudderstack_source_config_has_no_destinations(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    by_query = await client.get(
        "/sourceConfig/", params={"writeKey": project.pk, "p": "npm"}, headers={"Origin": PAGE}
    )
    assert by_query.status_code == 200, by_query.text
    assert_cors(by_query)
    source = by_query.json()["source"]
    assert source["destinations"] == [] and source["enabled"] is True and source["id"]
    basic = base64.b64encode(f"{project.pk}:".encode()).decode()
    by_header = await client.get("/sourceConfig", headers={"Authorization": f"Basic {basic}"})
    assert by_header.status_code == 200 and by_header.json()["source"]["id"] == source["id"]
    assert (await client.get("/sourceConfig/")).status_code == 401
    unknown = await client.get("/sourceConfig/", params={"writeKey": "pk_nope"})
    assert unknown.status_code == 404
    secret = await client.get(
        "/sourceConfig/", params={"writeKey": project.sk}, headers={"Origin": PAGE}
    )
    assert secret.status_code == 403 and secret.json()["code"] == "secret_key_in_browser"
    assert_no_cors(secret)
    services.projects.set_allowed_origins(project.id, ("https://elsewhere.example.com",))
    refused = await client.get(
        "/sourceConfig/", params={"writeKey": project.pk}, headers={"Origin": PAGE}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"


async def test_allowed_origins_are_stored_canonical_per_project(
    services: Services, project: Project
) -> None:
    other = create_project(services)
    assert services.projects.get_project(project.id).allowed_origins is None
    updated = services.projects.set_allowed_origins(
        project.id, ("https://a.example.com", "http://localhost:3000")
    )
    assert updated.allowed_origins == ("https://a.example.com", "http://localhost:3000")
    assert services.projects.get_project(project.id).allowed_origins == updated.allowed_origins
    assert sorted(services.projects.all_allowed_origins(), key=str) == sorted(
        [None, ("https://a.example.com", "http://localhost:3000")], key=str
    )
    assert services.projects.get_project(other.id).allowed_origins is None
    services.projects.set_allowed_origins(project.id, None)
    assert services.projects.all_allowed_origins() == [None, None]
