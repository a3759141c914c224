"""What users control is shown as text: XSS payloads in event names, traits, ids and list
names come back escaped on every page that shows them. And page views never count."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.admin.conftest import Clock, csrf_of
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services

PAYLOADS = [
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "</textarea><svg onload=alert(2)>",
]


def _csv(rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([row])
    return out.getvalue().encode()


def assert_inert(html: str) -> None:
    for payload in PAYLOADS:
        assert payload not in html
    assert "<script>alert" not in html and "<img src=x" not in html and "<svg onload" not in html
    # The only scripts are the admin's own files (the list editor's adds the rule builder).
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts[0] == '<script src="/admin/static/admin.js" defer>'
    assert set(scripts[1:]) <= {'<script src="/admin/static/rule_builder.js" defer>'}


async def test_payloads_in_events_traits_ids_and_list_names_stay_text(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    clock: Clock,
) -> None:
    clock.now = time.time_ns() // 1000  # the events are sent now: the stream shows them
    bad = PAYLOADS[0]
    await client.post(
        "/api/client/identify",
        json={
            "external_id": PAYLOADS[1],
            "anonymous_id": PAYLOADS[2],
            "data": {bad: PAYLOADS[1], "nested": {"k": PAYLOADS[2]}},
        },
        headers=bearer(project.pk),
    )
    await client.post(
        "/api/client/events",
        json=[{"name": name, "external_id": PAYLOADS[1], "data": {"p": bad}} for name in PAYLOADS],
        headers=bearer(project.pk),
    )
    await drain(services)
    form = await owner.get(f"/admin/p/{project.id}/lists/new")
    made = await owner.post(
        f"/admin/p/{project.id}/lists/new",
        data={
            "csrf": csrf_of(form.text),
            "name": PAYLOADS[1],
            "type": "static",
            "rule": "",
            "tags": bad,
        },
    )
    list_url = made.headers["location"]
    await owner.post(
        f"{list_url}/import",
        content=_csv(["external_id", PAYLOADS[1]]),
        headers={"Content-Type": "text/csv", "X-CSRF-Token": csrf_of(form.text)},
    )
    users = await owner.get(f"/admin/p/{project.id}/users")
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in users.text
    profile_url = re.search(rf'href="(/admin/p/{project.id}/users/prf_[^"]+)"', users.text)
    assert profile_url
    pages = {
        "users": users,
        "search": await owner.get(f"/admin/p/{project.id}/users", params={"q": bad}),
        "profile": await owner.get(profile_url.group(1)),
        "events": await owner.get(f"/admin/p/{project.id}/events"),
        "schema": await owner.get(f"/admin/p/{project.id}/schema"),
        "lists": await owner.get(f"/admin/p/{project.id}/lists"),
        "list": await owner.get(list_url),
        "edit": await owner.get(f"{list_url}/edit"),
    }
    for name, page in pages.items():
        assert page.status_code == 200, name
        assert_inert(page.text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages["profile"].text
    assert "&lt;/textarea&gt;&lt;svg onload=alert(2)&gt;" in pages["events"].text
    assert pages["list"].text.count("&#34;&gt;&lt;img src=x onerror=alert(1)&gt;") >= 2
    feed = await owner.get(f"/admin/p/{project.id}/events/feed")
    assert feed.headers["content-type"] == "application/json"  # the script sets it as text
    assert {e["name"] for e in feed.json()["events"]} == set(PAYLOADS)


async def test_a_rule_typed_with_a_payload_comes_back_escaped(
    owner: httpx.AsyncClient, project: Project
) -> None:
    form = await owner.get(f"/admin/p/{project.id}/lists/new")
    typed = '{"type": "' + PAYLOADS[2] + '"}'
    page = await owner.post(
        f"/admin/p/{project.id}/lists/new",
        data={
            "csrf": csrf_of(form.text),
            "name": PAYLOADS[0],
            "type": "dynamic",
            "rule": typed,
            "tags": "",
        },
    )
    assert page.status_code == 400
    assert_inert(page.text)
    assert "&lt;/textarea&gt;&lt;svg onload=alert(2)&gt;" in page.text


@pytest.fixture
def statements(services: Services) -> Iterator[list[str]]:
    """The SQL the reader runs while the test looks."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.lower())

    engine = services.db.reader
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def test_page_views_never_count_rows(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    statements: list[str],
) -> None:
    await client.post(
        "/api/client/events",
        json=[{"name": "Seen", "external_id": "u1", "data": {"a": 1}}],
        headers=bearer(project.pk),
    )
    await drain(services)
    users = await owner.get(f"/admin/p/{project.id}/users")
    profile_url = re.search(rf'href="(/admin/p/{project.id}/users/prf_[^"]+)"', users.text)
    assert profile_url
    statements.clear()
    for url in (
        f"/admin/p/{project.id}/users",
        f"/admin/p/{project.id}/users?q=u",
        profile_url.group(1),
        f"/admin/p/{project.id}/events",
        f"/admin/p/{project.id}/events/feed",
        f"/admin/p/{project.id}/lists",
        f"/admin/p/{project.id}/keys",
        f"/admin/p/{project.id}/schema",
    ):
        assert (await owner.get(url)).status_code == 200
    assert statements, "the listener saw the pages' queries"
    # The worker shares the engine on PostgreSQL: its lease checks are not the pages'; nor
    # is the journey engine's check of its graph cache (journeys.state), run by ingestion.
    workers = ("pg_locks", "ingest_log", "max(journeys.updated_at)")
    pages = [s for s in statements if not any(w in s for w in workers)]
    assert not [s for s in pages if "count(" in s]
