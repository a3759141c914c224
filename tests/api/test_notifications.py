"""In-app notifications as Spotzee's SDKs call them: list unread, mark read, only one's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain, route_first
from tidings.api.app import TidingsApp
from tidings.api.auth import KeyCache
from tidings.api.notifications import notifications_router
from tidings.bootstrap import Services
from tidings.store.notifications import NotificationStore

NOTIFICATIONS = "/api/client/notifications"
NOW = 1_780_000_000_000_000  # 2026-05-28T20:26:40Z
DAY = 86_400_000_000
CONTENT = {"type": "banner", "title": "Sale", "body": "20% off today", "read_on_show": True}
SDK_HEADERS = {"Spotzee-Version": "2026-04-28", "x-spotzee-client-type": "sdk-js"}


def test_the_contract_fixture_is_the_shared_one() -> None:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "spotzee-sdk-requests.json"
    requests = json.loads(fixture.read_text())["requests"]
    assert {r["path"] for r in requests} >= {"/api/client/events", "/api/client/identify"}


@pytest.fixture
def clock() -> list[int]:
    return [NOW]


@pytest.fixture
def store(services: Services) -> NotificationStore:
    return NotificationStore(services.db.writer, services.db.reader)


@pytest.fixture
def notifying_app(
    app: TidingsApp, services: Services, store: NotificationStore, clock: list[int]
) -> TidingsApp:
    keys = KeyCache(services.projects, 0, lookup_timeout=services.settings.key_lookup_timeout)
    route_first(app, notifications_router(services, keys, store, clock=lambda: clock[0]))
    return app


async def _identify(
    client: httpx.AsyncClient, services: Services, project: Project, **ids: str
) -> str:
    response = await client.post("/api/client/identify", json=ids, headers=bearer(project.pk))
    assert response.status_code == 204, response.text
    await drain(services)
    kind, value = (
        ("external", ids["external_id"])
        if "external_id" in ids
        else ("anonymous", ids["anonymous_id"])
    )
    profile_id = services.profiles.profile_id_for(project.id, kind, value)
    assert profile_id is not None
    return profile_id


def _create(
    services: Services,
    store: NotificationStore,
    project_id: int,
    profile_id: str,
    send_id: int,
    *,
    now: int = NOW,
    **content: Any,
) -> int:
    with services.db.writer.begin() as conn:
        return store.create(
            conn,
            project_id=project_id,
            profile_id=profile_id,
            campaign_id=12,
            send_id=send_id,
            content={**CONTENT, **content},
            now=now,
        )


def _headers(project: Project, **ids: str) -> dict[str, str]:
    return bearer(project.pk, **SDK_HEADERS, **ids)


async def test_unread_notifications_are_listed_newest_first_in_the_sdk_shape(
    notifying_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    store: NotificationStore,
) -> None:
    ada = await _identify(client, services, project, external_id="ada")
    first = _create(services, store, project.id, ada, 1, title="First")
    second = _create(services, store, project.id, ada, 2, now=NOW + 1_000, title="Second")
    assert _create(services, store, project.id, ada, 2) == second  # one per send
    response = await client.get(
        NOTIFICATIONS, headers=_headers(project, **{"x-external-id": "ada"})
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert [n["id"] for n in page["results"]] == [second, first]
    assert page["nextCursor"] is None
    assert page["results"][1] == {
        "id": first,
        "project_id": project.id,
        "user_id": ada,
        "content_type": "banner",
        "content": {**CONTENT, "title": "First"},
        "read_at": None,
        "expires_at": "2026-06-27T20:26:40.000Z",  # 30 days on
        "created_at": "2026-05-28T20:26:40.000Z",
        "updated_at": "2026-05-28T20:26:40.000Z",
    }


async def test_pages_follow_the_cursor(
    notifying_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    store: NotificationStore,
) -> None:
    ada = await _identify(client, services, project, external_id="ada")
    ids = [_create(services, store, project.id, ada, send) for send in range(1, 6)]
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get(
                NOTIFICATIONS, params=params, headers=_headers(project, **{"x-external-id": "ada"})
            )
        ).json()
        seen += [n["id"] for n in page["results"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_marking_read_is_for_the_owner_only(
    notifying_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    store: NotificationStore,
    clock: list[int],
) -> None:
    ada = await _identify(client, services, project, external_id="ada")
    await _identify(client, services, project, external_id="bob")
    note = _create(services, store, project.id, ada, 1)
    other = create_project(services)
    await _identify(client, services, other, external_id="ada")  # same external id elsewhere

    # Bob, Ada of another project, an unknown user, an unknown id: all 404, nothing read.
    for key, body in (
        (project.pk, {"external_id": "bob"}),
        (other.pk, {"external_id": "ada"}),
        (project.pk, {"external_id": "nobody"}),
    ):
        response = await client.put(f"{NOTIFICATIONS}/{note}", json=body, headers=bearer(key))
        assert_problem(response, 404, "resource_missing")
    response = await client.put(
        f"{NOTIFICATIONS}/999999", json={"external_id": "ada"}, headers=bearer(project.pk)
    )
    assert_problem(response, 404, "resource_missing")
    listed = await client.get(NOTIFICATIONS, headers=_headers(project, **{"x-external-id": "ada"}))
    assert [n["id"] for n in listed.json()["results"]] == [note]
    elsewhere = await client.get(NOTIFICATIONS, headers=_headers(other, **{"x-external-id": "ada"}))
    assert elsewhere.json()["results"] == []

    clock[0] = NOW + 5_000_000
    response = await client.put(
        f"{NOTIFICATIONS}/{note}", json={"external_id": "ada"}, headers=_headers(project)
    )
    assert response.status_code == 200, response.text
    assert response.json()["read_at"] == "2026-05-28T20:26:45.000Z"
    listed = await client.get(NOTIFICATIONS, headers=_headers(project, **{"x-external-id": "ada"}))
    assert listed.json()["results"] == []  # read ones are no longer listed
    again = await client.put(
        f"{NOTIFICATIONS}/{note}", json={"external_id": "ada"}, headers=_headers(project)
    )
    assert again.json()["read_at"] == "2026-05-28T20:26:45.000Z"  # the first read stays


async def test_anonymous_users_by_header_and_body(
    notifying_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    store: NotificationStore,
) -> None:
    anon = await _identify(client, services, project, anonymous_id="a-1")
    note = _create(services, store, project.id, anon, 1)
    listed = await client.get(NOTIFICATIONS, headers=_headers(project, **{"x-anonymous-id": "a-1"}))
    assert [n["id"] for n in listed.json()["results"]] == [note]
    by_header = await client.put(
        f"{NOTIFICATIONS}/{note}", headers=_headers(project, **{"x-anonymous-id": "a-1"})
    )
    assert by_header.status_code == 200
    assert by_header.json()["read_at"] is not None


async def test_expired_notifications_are_not_listed_and_are_purged(
    notifying_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    store: NotificationStore,
    clock: list[int],
) -> None:
    ada = await _identify(client, services, project, external_id="ada")
    short = _create(services, store, project.id, ada, 1, expires_at=NOW + DAY)
    long = _create(services, store, project.id, ada, 2)
    clock[0] = NOW + 2 * DAY
    listed = await client.get(NOTIFICATIONS, headers=_headers(project, **{"x-external-id": "ada"}))
    assert [n["id"] for n in listed.json()["results"]] == [long]
    assert short != long
    assert store.purge_expired(NOW + 2 * DAY) == 1
    assert store.purge_expired(NOW + 2 * DAY) == 0


async def test_bad_requests_are_refused(
    notifying_app: TidingsApp, client: httpx.AsyncClient, project: Project
) -> None:
    assert_problem(
        await client.get(NOTIFICATIONS, headers=_headers(project)), 400, "parameter_missing"
    )
    ada = {"x-external-id": "ada"}
    for params in ({"cursor": "abc"}, {"limit": 0}, {"limit": 101}):
        response = await client.get(NOTIFICATIONS, params=params, headers=_headers(project, **ada))
        assert response.status_code == 400, params
    response = await client.get(NOTIFICATIONS, headers={"x-external-id": "ada"})
    assert_problem(response, 401, "authentication_required")
    response = await client.put(f"{NOTIFICATIONS}/1", content=b"{", headers=bearer(project.pk))
    assert response.status_code == 400
    response = await client.put(f"{NOTIFICATIONS}/1", json={}, headers=bearer(project.pk))
    assert_problem(response, 400, "parameter_missing")
    response = await client.put(
        f"{NOTIFICATIONS}/x1", json={"external_id": "ada"}, headers=bearer(project.pk)
    )
    assert_problem(response, 404, "resource_missing")
    response = await client.put(
        f"{NOTIFICATIONS}/1", json={"external_id": "a" * 20_000}, headers=bearer(project.pk)
    )
    assert_problem(response, 413, "payload_too_large")


async def test_notifications_follow_merges_and_go_with_erasure(
    services: Services, project: Project, store: NotificationStore
) -> None:
    _create(services, store, project.id, "p_absorbed", 1)
    _create(services, store, project.id, "p_erased", 2)
    _create(services, store, project.id + 1, "p_absorbed", 3)  # another project's: untouched
    with services.db.writer.begin() as conn:
        for _ in range(2):  # a batch applied again changes nothing more
            NotificationStore.follow_profiles(
                conn, [(project.id, "p_absorbed", "p_survivor")], [(project.id, "p_erased")]
            )
    assert [n.id for n in store.unread(project.id, "p_survivor", NOW, before=None, limit=10)] == [1]
    assert store.unread(project.id, "p_erased", NOW, before=None, limit=10) == []
    assert len(store.unread(project.id + 1, "p_absorbed", NOW, before=None, limit=10)) == 1


async def test_the_batch_hook_applies_merges_and_erasures(
    services: Services, project: Project, store: NotificationStore
) -> None:
    from tidings.messaging.notifications import NotificationsHook
    from tidings.pipeline.processor import BatchFacts

    _create(services, store, project.id, "p_old", 1)
    facts = BatchFacts(events=[], merges=[(project.id, "p_old", "p_new")], erased=[], profiles=[])
    with services.db.writer.begin() as conn:
        NotificationsHook().apply(conn, facts, NOW)
    assert [n.profile_id for n in store.unread(project.id, "p_new", NOW, before=None, limit=5)] == [
        "p_new"
    ]
