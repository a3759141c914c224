"""Idempotency over every database × ingest log pairing, in process.

``backend`` (conftest) picks SQLite or PostgreSQL, ``log_url`` the database's log or a
JetStream stream of the test's own: the four pairings a deployment can have. Each keeps
its records elsewhere (SQLite: the log file; PostgreSQL: the database; JetStream: the
database, claimed before publishing), so each is checked on its own. PostgreSQL with
JetStream once answered every fresh key with ``409 idempotency_in_progress``.
The same across processes: tests/e2e/test_idempotency_served.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_idempotency import count_events
from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain, make_services, make_settings
from tests.log.test_nats_log import _delete_stream, _unique, nats_url  # noqa: F401 (fixture)
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.log.database import DatabaseLog
from tidings.log.nats import NatsLog
from tidings.settings import Settings


@pytest.fixture(params=["db", "jetstream"])
def log_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "db":
        yield "db"
        return
    nats = str(request.getfixturevalue("nats_url"))
    stream, prefix = _unique()
    yield f"{nats}?stream={stream}&prefix={prefix}"
    _delete_stream(nats, stream)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, log_url: str) -> Settings:
    """Overrides the conftest fixture: the database and the log of this pairing."""
    return make_settings(tmp_path, database_url=database_url, log_url=log_url)


def test_the_pairing_is_the_one_asked_for(services: Services, backend: str, log_url: str) -> None:
    assert services.db.is_sqlite == (backend == "sqlite")
    assert isinstance(services.log, DatabaseLog if log_url == "db" else NatsLog)


async def test_a_fresh_key_is_accepted_and_its_retry_replayed(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    body = [{"name": "Order placed", "external_id": "u_1"}, {"name": "Paid", "external_id": "u_1"}]
    headers = bearer(project.pk, **{"Idempotency-Key": "fresh-1"})
    first = await client.post("/api/client/events", json=body, headers=headers)
    assert first.status_code == 204, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/api/client/events", json=body, headers=headers)
    assert again.status_code == 204, again.text
    assert again.headers["idempotent-replayed"] == "true"
    await drain(services)
    assert count_events(services) == 2
    user = await client.get("/api/client/users/u_1", headers=bearer(project.sk))
    assert user.status_code == 200


async def test_a_key_sent_with_another_body_is_a_mismatch(
    client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.pk, **{"Idempotency-Key": "k-mismatch"})
    first = await client.post(
        "/api/client/events", json=[{"name": "A", "external_id": "u"}], headers=headers
    )
    assert first.status_code == 204, first.text
    other = await client.post(
        "/api/client/events", json=[{"name": "B", "external_id": "u"}], headers=headers
    )
    assert_problem(other, 409, "idempotency_key_mismatch")


async def test_a_users_batch_is_answered_then_replayed(
    client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "batch-1"})
    body = [{"external_id": "u_b", "data": {"plan": "pro"}}, {"external_id": "u_c", "email": "x"}]
    first = await client.post("/api/client/users/batch", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert (first.json()["succeeded"], first.json()["failed"]) == (1, 1)
    again = await client.post("/api/client/users/batch", json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


async def test_in_progress_while_the_first_request_waits(
    tmp_path: Path, database_url: str, log_url: str
) -> None:
    # No consumer: the synchronous batch waits for processing that never comes.
    settings = make_settings(
        tmp_path, database_url=database_url, log_url=log_url, run_worker=False, sync_timeout=2.0
    )
    services = make_services(settings)
    services.start()
    try:
        project = create_project(services)
        transport = httpx.ASGITransport(app=create_app(services, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = bearer(project.sk, **{"Idempotency-Key": "waiting"})
            body = [{"external_id": "u_w"}]
            first = asyncio.create_task(
                client.post("/api/client/users/batch", json=body, headers=headers)
            )
            for _ in range(400):
                if services.idempotency.get(project.id, "waiting") is not None:
                    break
                await asyncio.sleep(0.005)
            second = await client.post("/api/client/users/batch", json=body, headers=headers)
            assert_problem(second, 409, "idempotency_in_progress")
            timed_out = await first
            assert_problem(timed_out, 503, "service_unavailable")
    finally:
        services.stop()
