"""Users: search, the profile page and its timeline, the live stream of events."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx

from tests.admin.conftest import Clock, csrf_of
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services


async def _identify(client: httpx.AsyncClient, project: Project, **body: object) -> None:
    response = await client.post("/api/client/identify", json=body, headers=bearer(project.pk))
    assert response.status_code in (200, 202, 204), response.text


async def _events(
    client: httpx.AsyncClient, project: Project, events: list[dict[str, object]]
) -> None:
    response = await client.post("/api/client/events", json=events, headers=bearer(project.pk))
    assert response.status_code == 204, response.text


def _profile_link(html: str, project: Project) -> str:
    match = re.search(rf'href="(/admin/p/{project.id}/users/[^"?]+)"', html)
    assert match, html
    return match.group(1)


async def test_the_users_page_says_what_to_do_when_there_are_none(
    owner: httpx.AsyncClient, project: Project
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/users")
    assert "No users yet." in page.text and "/api/client/identify" in page.text
    none = await owner.get(f"/admin/p/{project.id}/users?q=zzz")
    assert "No user matches “zzz”." in none.text


async def test_users_are_found_by_external_id_or_email_and_paged(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for n in range(30):
        await _identify(client, project, external_id=f"cust-{n:02d}", email=f"c{n}@shop.example")
    await _identify(client, project, external_id="other", email="Jane@Example.com")
    await drain(services)
    found = await owner.get(f"/admin/p/{project.id}/users?q=jane@")
    assert "Jane@example.com" in found.text  # as stored: the domain in lower case
    assert ">other</a>" in found.text and "cust-" not in found.text
    first = await owner.get(f"/admin/p/{project.id}/users?q=cust-")
    assert first.text.count(">cust-") == 25
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older, first.text
    second = await owner.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count(">cust-") == 5 and 'rel="prev"' in second.text
    bad_cursor = await owner.get(f"/admin/p/{project.id}/users?q=cust-&cursor=nonsense")
    assert bad_cursor.status_code == 303  # back to the first page, not a 500


async def test_the_profile_shows_identities_traits_devices_lists_and_pages_the_timeline(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    await _events(client, project, [{"name": "App opened", "anonymous_id": "anon-1"}])
    await _identify(
        client,
        project,
        external_id="ada",
        anonymous_id="anon-1",
        email="ada@example.com",
        data={"plan": "pro", "address": {"city": "London"}},
    )
    device = await client.post(
        "/api/client/devices",
        json={
            "external_id": "ada",
            "device_id": "phone-1",
            "token": "t",
            "os": "iOS",
            "model": "iPhone",
            "app_build": "1",
            "app_version": "1.0",
        },
        headers=bearer(project.pk),
    )
    assert device.status_code in (200, 202, 204), device.text
    await _events(
        client,
        project,
        [
            {
                "name": f"Step {n}",
                "external_id": "ada",
                "data": {"n": n},
                "created_at": f"2026-01-01T00:00:{n:02d}Z",
            }
            for n in range(30)
        ],
    )
    await drain(services)
    listed = await owner.get(f"/admin/p/{project.id}/lists/new")
    made = await owner.post(
        f"/admin/p/{project.id}/lists/new",
        data={
            "csrf": csrf_of(listed.text),
            "name": "VIPs",
            "type": "static",
            "rule": "",
            "tags": "",
        },
    )
    assert made.status_code == 303
    imported = await owner.post(
        made.headers["location"] + "/import",
        data={"csrf": csrf_of(listed.text), "csv": "external_id\nada\n"},
    )
    assert "1 added" in imported.text
    search = await owner.get(f"/admin/p/{project.id}/users?q=ada")
    profile = await owner.get(_profile_link(search.text, project))
    text = profile.text
    assert "<h1>ada</h1>" in text and "ada@example.com" in text
    assert "<code>anon-1</code>" in text  # the anonymous id merged into it
    assert "<dt>plan</dt><dd>pro</dd>" in text and "London" in text
    assert "<code>phone-1</code>" in text and ">VIPs</a>" in text
    assert text.count('class="event-name"') == 25 and "Step 29" in text and "Step 4<" not in text
    older = re.search(r'href="([^"]+)" rel="next"', text)
    assert older
    rest = await owner.get(older.group(1).replace("&amp;", "&"))
    assert "App opened" in text  # sent last of all (its time is now): the newest
    assert rest.text.count('class="event-name"') == 6  # Step 5 … Step 0
    assert "Step 0<" in rest.text and 'rel="prev"' in rest.text


async def test_an_unknown_profile_is_not_found(owner: httpx.AsyncClient, project: Project) -> None:
    response = await owner.get(f"/admin/p/{project.id}/users/nope")
    assert response.status_code == 404 and "No such user" in response.text


async def test_the_live_stream_shows_recent_events_and_the_feed_only_newer_ones(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    clock: Clock,
) -> None:
    empty = await owner.get(f"/admin/p/{project.id}/events")
    assert "No events in the last 24 hours." in empty.text

    def ago(seconds: int) -> str:
        moment = datetime.fromtimestamp(clock.now / 1_000_000 - seconds, tz=UTC)
        return moment.isoformat()

    await _events(
        client,
        project,
        [
            {"name": "Old", "external_id": "u", "created_at": ago(25 * 3600)},
            {"name": "First", "external_id": "u", "created_at": ago(60)},
            {"name": "Second", "external_id": "u", "created_at": ago(50)},
        ],
    )
    await drain(services)
    page = await owner.get(f"/admin/p/{project.id}/events")
    assert "Second" in page.text and "First" in page.text and ">Old<" not in page.text
    after = re.search(r'data-after="([^"]+)"', page.text)
    assert after
    nothing = await owner.get(f"/admin/p/{project.id}/events/feed?after={after.group(1)}")
    assert nothing.json() == {"events": []}
    await _events(client, project, [{"name": "Third", "external_id": "u", "created_at": ago(40)}])
    await drain(services)
    newer = (await owner.get(f"/admin/p/{project.id}/events/feed?after={after.group(1)}")).json()
    assert [e["name"] for e in newer["events"]] == ["Third"]
    assert newer["events"][0]["who"] == "u"


async def test_the_feed_answers_json_when_signed_out(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await client.get(f"/admin/p/{project.id}/events/feed")
    assert response.status_code == 401 and response.json()["error"] == "Signed out"
