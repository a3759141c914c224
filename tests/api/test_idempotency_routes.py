"""``Idempotency-Key`` on every state-changing route of ``/api/client`` (docs/api.md).

Every POST, PATCH and PUT operation of the OpenAPI document under ``/api/client`` either
replays its first answer to a retry with the same key (``Idempotent-Replayed: true``, the
same status and body) or is on :data:`EXCLUDED`, with the reason docs/api.md gives: a new
route that ignores the key fails here until it honours it or is excluded on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_hostile_routes import _fill, _headers, _openapi, _operations, _world
from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, drain
from tests.messaging.helpers import EMAIL_TEMPLATE, deliver, logger_provider, manual, post
from tidings.api import idempotency
from tidings.bootstrap import Services
from tidings.store.tables import idempotency_keys
from tidings.store.tables_journeys import journeys

API = "/api/client"

# The routes that honour no key, and why (docs/api.md, "Idempotency").
EXCLUDED = {
    ("POST", f"{API}/templates/{{id}}/preview"): "read-only",
    ("POST", f"{API}/journeys/{{id}}/simulate"): "read-only",
    ("POST", f"{API}/users/{{external_id}}/sessions"): "changes nothing",
    ("PATCH", f"{API}/subscriptions/me"): "public key",
    ("PUT", f"{API}/notifications/{{notification_id}}"): "public key",
}

# The ingest routes store successes only (a refused batch stores nothing): valid bodies.
# Any other route gets ``{"name": "…"}``: its refusal is stored and replayed too.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{API}/events"): [{"name": "E", "external_id": "u"}],
    ("POST", f"{API}/identify"): {"external_id": "u2"},
    ("POST", f"{API}/users"): [{"external_id": "u3"}],
    ("POST", f"{API}/users/batch"): [{"external_id": "u4"}],
    ("PATCH", f"{API}/users"): [{"external_id": "u5"}],
    ("POST", f"{API}/alias"): {"anonymous_id": "anon-1", "external_id": "u6"},
    ("POST", f"{API}/devices"): {
        "external_id": "u",
        "device_id": "d-1",
        "token": "t",
        "os": "web",
        "model": "desktop",
        "app_build": "1",
        "app_version": "1.0",
    },
}


def _same(response: httpx.Response) -> Any:
    """What a replay repeats: the body, but a refusal's request_id is the retry's own."""
    if response.status_code < 400:
        return response.content
    assert response.json()["request_id"] == response.headers["x-request-id"]
    return {k: v for k, v in response.json().items() if k != "request_id"}


def _body(method: str, path: str) -> Any:
    return BODIES.get((method, path), {"name": f"idem {method} {path}"})


async def test_every_changing_route_replays_or_is_excluded(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    world = await _world(client, services, project)
    changing = [
        (method, path)
        for method, path, _ in _operations(await _openapi(client))
        if method in ("POST", "PATCH", "PUT") and path.startswith(API + "/")
    ]
    assert len(changing) > 20, changing
    # The app's own list of exclusions is the test's (and the documented one).
    assert set(idempotency.EXCLUDED) == set(EXCLUDED), idempotency.EXCLUDED
    assert set(EXCLUDED) <= set(changing), set(EXCLUDED) - set(changing)
    failures = []
    for n, (method, path) in enumerate(changing):
        if (method, path) in EXCLUDED:
            continue
        url = _fill(path, world)
        headers = {**_headers(path, project, world), "Idempotency-Key": f"route-{n}"}
        body = _body(method, path)
        first = await client.request(method, url, json=body, headers=headers)
        await drain(services)
        again = await client.request(method, url, json=body, headers=headers)
        where = (method, path, first.status_code, first.text[:200])
        if "idempotent-replayed" in first.headers:
            failures.append((*where, "the first answer says replayed"))
        elif again.headers.get("idempotent-replayed") != "true":
            failures.append((*where, "no replay", again.status_code, again.text[:200]))
        elif (again.status_code, _same(again)) != (first.status_code, _same(first)):
            failures.append((*where, "another answer", again.status_code, again.text[:200]))
    assert not failures, "\n".join(map(str, failures))


async def test_an_excluded_route_ignores_the_key(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Excluded means ignored: the preview renders afresh and stores no record."""
    world = await _world(client, services, project)
    url = f"{API}/templates/{world.ids['templates']}/preview"
    headers = bearer(project.sk, **{"Idempotency-Key": "preview"})
    for _ in range(2):
        response = await client.post(url, json={}, headers=headers)
        assert response.status_code == 200, response.text
        assert "idempotent-replayed" not in response.headers
    assert _record(services, project, "preview") is None


def _journeys(services: Services, project: Project) -> int:
    with services.db.reader.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(journeys)
                .where(journeys.c.project_id == project.id)
            ).scalar_one()
        )


def _record(services: Services, project: Project, key: str) -> Any:
    with services.db.reader.connect() as conn:
        return conn.execute(
            sa.select(idempotency_keys).where(
                idempotency_keys.c.project_id == project.id, idempotency_keys.c.key == key
            )
        ).first()


async def _scheduled_campaign(
    client: httpx.AsyncClient, services: Services, project: Project
) -> tuple[str, dict[str, Any]]:
    """A blast campaign ready to schedule, and the body that schedules it (due at once;
    the test delivers it by hand)."""
    manual(services)
    await logger_provider(client, project)
    listed = await post(client, project, "/lists", {"name": "L", "type": "static"})
    campaign = await post(
        client,
        project,
        "/campaigns",
        {"type": "blast", "name": "B", "channel": "email", "list_ids": [listed["id"]]},
    )
    await post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": "en", "data": EMAIL_TEMPLATE},
    )
    body = {"state": "scheduled", "send_at": "2000-01-01T00:00:00Z"}  # due at once
    return f"{API}/campaigns/{campaign['id']}", body


async def test_a_retried_schedule_replays_200_not_state_conflict(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url, body = await _scheduled_campaign(client, services, project)
    headers = bearer(project.sk, **{"Idempotency-Key": "schedule-1"})
    first = await client.patch(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "scheduled"
    await deliver(services)  # the blast is sent: the campaign is no longer schedulable
    assert (await client.get(url, headers=bearer(project.sk))).json()["state"] == "finished"
    again = await client.patch(url, json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    # Without the key the same change is refused: the replay is the key's doing.
    plain = await client.patch(url, json=body, headers=bearer(project.sk))
    assert_problem(plain, 409, "state_conflict")


async def test_same_key_with_another_body_is_a_mismatch(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url, body = await _scheduled_campaign(client, services, project)
    headers = bearer(project.sk, **{"Idempotency-Key": "schedule-2"})
    assert (await client.patch(url, json=body, headers=headers)).status_code == 200
    other = await client.patch(url, json={"name": "Renamed"}, headers=headers)
    assert_problem(other, 409, "idempotency_key_mismatch")
    current = (await client.get(url, headers=bearer(project.sk))).json()
    assert current["name"] == "B"  # the mismatched request changed nothing


async def test_a_journey_created_twice_with_one_key_is_created_once(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "journey-1"})
    first = await client.post(f"{API}/journeys", json={"name": "Welcome"}, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(f"{API}/journeys", json={"name": "Welcome"}, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert _journeys(services, project) == 1


async def test_a_stored_answer_is_not_replayed_to_a_public_key(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    # Public keys live in web pages: one must not read a secret route's stored answer by
    # sending the same Idempotency-Key.
    body = {"name": "Welcome"}
    headers = bearer(project.sk, **{"Idempotency-Key": "journey-pk"})
    first = await client.post(f"{API}/journeys", json=body, headers=headers)
    assert first.status_code == 201, first.text
    public = bearer(project.pk, **{"Idempotency-Key": "journey-pk"})
    again = await client.post(f"{API}/journeys", json=body, headers=public)
    assert again.status_code in (401, 403), again.text
    assert "idempotent-replayed" not in again.headers
    assert "Welcome" not in again.text
    assert _journeys(services, project) == 1


async def test_concurrent_twins_create_one_journey(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    """Sent together: one creates, the other replays its answer or hears in_progress."""
    headers = bearer(project.sk, **{"Idempotency-Key": "journey-twins"})
    answers = await asyncio.gather(
        *(client.post(f"{API}/journeys", json={"name": "T"}, headers=headers) for _ in range(4))
    )
    created = [a for a in answers if a.status_code == 201]
    assert created and len({a.json()["id"] for a in created}) == 1
    for answer in answers:
        if answer.status_code != 201:
            assert_problem(answer, 409, "idempotency_in_progress")
    assert _journeys(services, project) == 1


async def test_a_refusal_is_replayed_and_a_key_without_answer_is_in_progress(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "refused"})
    first = await client.patch(f"{API}/journeys/999999", json={"name": "x"}, headers=headers)
    assert_problem(first, 404, "resource_missing")
    again = await client.patch(f"{API}/journeys/999999", json={"name": "x"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    # The same refusal, in the envelope: its request_id is the retry's X-Request-Id.
    assert (
        assert_problem(again, 404, "resource_missing")["request_id"] != first.json()["request_id"]
    )
    assert _same(again) == _same(first)
    # A reservation whose request died holds the key until it expires (the TTL).
    raw = b'{"name":"S"}'
    digest = hashlib.sha256(b"POST /api/client/journeys\n" + raw).hexdigest()
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(idempotency_keys).values(
                project_id=project.id,
                key="stuck",
                request_hash=digest,
                status=None,
                body=None,
                created_at=time.time_ns() // 1000,
            )
        )
    stuck = bearer(project.sk, **{"Idempotency-Key": "stuck", "Content-Type": "application/json"})
    held = await client.post(f"{API}/journeys", content=raw, headers=stuck)
    assert_problem(held, 409, "idempotency_in_progress")
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.update(idempotency_keys)
            .where(idempotency_keys.c.key == "stuck")
            .values(created_at=1_700_000_000 * 1_000_000)  # 2023: past the TTL
        )
    fresh = await client.post(f"{API}/journeys", content=raw, headers=stuck)
    assert fresh.status_code == 201, fresh.text  # expired: the key is used afresh
    assert "idempotent-replayed" not in fresh.headers


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_invalid_key_is_refused_before_anything_changes(
    client: httpx.AsyncClient, services: Services, project: Project, key: str
) -> None:
    response = await client.post(
        f"{API}/journeys",
        json={"name": "N"},
        headers=bearer(project.sk, **{"Idempotency-Key": key}),
    )
    assert_problem(response, 400, "idempotency_key_invalid")
    listed = (await client.get(f"{API}/journeys", headers=bearer(project.sk))).json()
    assert listed["results"] == []
