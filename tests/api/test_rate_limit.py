"""Rate limits at the HTTP edge, with a fake clock: nothing here sleeps."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, make_services, make_settings
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.settings import Settings

EVENT = [{"name": "Order placed", "external_id": "u1"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    """``limited(**settings)`` → an async context giving (services, project, client_for)."""
    started: list[Services] = []

    @asynccontextmanager
    async def open_(**overrides: Any) -> AsyncIterator[tuple[Services, Project, Any]]:
        services = make_services(make_settings(tmp_path, **overrides))
        services.start()
        started.append(services)
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False, clock=clock)
        clients: list[httpx.AsyncClient] = []

        def client_for(address: str = "203.0.113.1") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://tidings.test")
            clients.append(client)
            return client

        try:
            yield services, project, client_for
        finally:
            for client in clients:
                await client.aclose()

    yield open_
    for services in started:
        services.stop()


async def test_the_request_after_the_burst_is_refused_with_retry_after(
    limited: Any, clock: FakeClock
) -> None:
    async with limited(rate_limit_per_key=1, rate_limit_burst=3) as (services, project, client_for):
        client = client_for()
        for _ in range(3):
            response = await client.post(
                "/api/client/events", json=EVENT, headers=bearer(project.pk)
            )
            assert response.status_code == 204, response.text
        committed = services.committer.committed_items

        response = await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))

        body = assert_problem(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "1"
        assert body["title"] == "Too Many Requests"
        assert "API key" in body["message"]
        assert services.committer.committed_items == committed  # not processed
        clock.now += 1
        response = await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
        assert response.status_code == 204, response.text


async def test_retry_after_is_whole_seconds_rounded_up(limited: Any, clock: FakeClock) -> None:
    async with limited(rate_limit_per_key=0.4, rate_limit_burst=1) as (_, project, client_for):
        client = client_for()
        assert (await client.get("/api/client/users", headers=bearer(project.sk))).is_success
        response = await client.get("/api/client/users", headers=bearer(project.sk))
        assert_problem(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "3"  # 2.5 s until the next token
        clock.now += 1
        response = await client.get("/api/client/users", headers=bearer(project.sk))
        assert response.headers["retry-after"] == "2"


async def test_another_key_is_not_affected(limited: Any) -> None:
    async with limited(rate_limit_per_key=1, rate_limit_burst=1) as (_, project, client_for):
        client = client_for()
        await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
        response = await client.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
        assert_problem(response, 429, "rate_limited")

        response = await client.post("/api/client/events", json=EVENT, headers=bearer(project.sk))
        assert response.status_code == 204, response.text
        response = await client.get("/api/client/users", headers=bearer(project.sk))
        assert_problem(response, 429, "rate_limited")  # FastAPI routes count too


async def test_a_segment_write_key_is_limited_per_key(limited: Any) -> None:
    async with limited(rate_limit_per_key=1, rate_limit_burst=1) as (_, project, client_for):
        client = client_for()
        basic = "Basic " + base64.b64encode(f"{project.pk}:".encode()).decode()
        track = {"userId": "u1", "event": "Signed up"}
        response = await client.post("/v1/track", json=track, headers={"Authorization": basic})
        assert response.is_success, response.text
        response = await client.post("/v1/track", json=track, headers={"Authorization": basic})
        assert_problem(response, 429, "rate_limited")


async def test_the_per_ip_limit_counts_every_key_and_no_key(limited: Any) -> None:
    async with limited(rate_limit_per_ip=1, rate_limit_burst=2) as (_, project, client_for):
        one, other = client_for("198.51.100.7"), client_for("198.51.100.8")
        await one.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
        response = await one.get("/api/client/users")  # no key at all: still counted
        assert_problem(response, 401, "authentication_required")
        response = await one.post("/api/client/events", json=EVENT, headers=bearer(project.sk))
        body = assert_problem(response, 429, "rate_limited")
        assert "address" in body["message"]
        assert response.headers["retry-after"] == "1"

        response = await other.post("/api/client/events", json=EVENT, headers=bearer(project.pk))
        assert response.status_code == 204, response.text


@pytest.mark.parametrize("trusted", [True, False])
async def test_x_forwarded_for_is_the_address_only_when_trusted(
    limited: Any, trusted: bool
) -> None:
    settings = {"rate_limit_per_ip": 1, "rate_limit_burst": 1, "trust_forwarded_for": trusted}
    async with limited(**settings) as (_, project, client_for):
        proxy = client_for("10.0.0.2")
        for address in ("192.0.2.1", "192.0.2.2"):
            # The client may forge earlier entries; the proxy appended the last one.
            headers = bearer(project.pk, **{"X-Forwarded-For": f"198.51.100.7, {address}"})
            response = await proxy.post("/api/client/events", json=EVENT, headers=headers)
            if trusted or address == "192.0.2.1":
                assert response.status_code == 204, response.text
            else:
                assert_problem(response, 429, "rate_limited")


async def test_health_and_the_api_description_are_never_limited(limited: Any) -> None:
    settings = {"rate_limit_per_ip": 1, "rate_limit_per_key": 1, "rate_limit_burst": 1}
    async with limited(**settings) as (_, project, client_for):
        client = client_for()
        for _ in range(5):
            for path in ("/api/health", "/openapi.json", "/docs"):
                response = await client.get(path, headers=bearer(project.sk))
                assert response.status_code == 200, (path, response.text)
                assert response.headers["x-request-id"].startswith("req_")
        # They took no token: the first limited request still passes.
        response = await client.get("/api/client/users", headers=bearer(project.sk))
        assert response.status_code == 200, response.text
        response = await client.get("/api/client/users", headers=bearer(project.sk))
        assert_problem(response, 429, "rate_limited")


async def test_rate_limits_are_off_by_default(limited: Any) -> None:
    defaults = Settings.model_fields
    assert defaults["rate_limit_per_key"].default == 0
    assert defaults["rate_limit_per_ip"].default == 0
    assert defaults["trust_forwarded_for"].default is False
    async with limited() as (_, project, client_for):
        client = client_for()
        for _ in range(50):
            response = await client.get("/api/client/users", headers=bearer(project.sk))
            assert response.status_code == 200, response.text


def test_the_key_lookup_timeout_is_a_setting(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path, key_lookup_timeout=0.25))
    try:
        app = create_app(services, manage_lifecycle=False)
        assert app.state.keys.lookup_timeout == 0.25
    finally:
        services.close()
    assert Settings.model_fields["key_lookup_timeout"].default == 2.0
