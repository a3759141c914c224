"""Project pages: the switcher, roles, settings, API keys, the data schema; CSRF on forms."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.admin.conftest import Clock, csrf_of, make_account, sign_in
from tests.conftest import Project, bearer, create_project, drain
from tidings.bootstrap import Services
from tidings.domain.auth import Role, hash_key
from tidings.store.admin_views import AdminViews


async def _as(
    services: Services,
    new_client: Callable[[], httpx.AsyncClient],
    email: str,
    roles: dict[int, Role],
) -> httpx.AsyncClient:
    make_account(services, email, roles=roles)
    browser = new_client()
    assert (await sign_in(browser, email)).status_code == 303
    return browser


async def test_every_page_answers_with_the_security_headers(
    owner: httpx.AsyncClient, project: Project
) -> None:
    for section in (
        "users",
        "events",
        "lists",
        "lists/new",
        "journeys",
        "campaigns",
        "reports",
        "schema",
        "keys",
        "settings",
    ):
        response = await owner.get(f"/admin/p/{project.id}/{section}")
        assert response.status_code == 200, (section, response.text)
        assert response.headers["content-type"].startswith("text/html")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    assert (await owner.get("/admin/static/admin.css")).status_code == 200
    assert (await owner.get("/admin/static/admin.js")).status_code == 200


async def test_the_switcher_lists_only_the_projects_of_the_account(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    other = create_project(services)
    services.projects.create_project("Hidden", locale=None, timezone=None)
    browser = await _as(services, new_client, "ed@example.com", {other.id: Role.EDITOR})
    home = await browser.get("/admin/")
    assert home.headers["location"] == f"/admin/p/{other.id}/users"
    page = await browser.get(home.headers["location"])
    assert f'<option value="{other.id}" selected>' in page.text
    assert "Hidden" not in page.text
    # A project without a role is "not found", whether or not it exists.
    for pid in (project.id, 999):
        refused = await browser.get(f"/admin/p/{pid}/users")
        assert refused.status_code == 404
        assert "no such project, or you have no access to it" in refused.text
    switched = await browser.get(f"/admin/switch?project={other.id}&section=lists")
    assert switched.headers["location"] == f"/admin/p/{other.id}/lists"


async def test_an_account_without_projects_is_told_what_to_do(
    services: Services, clock: Clock, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    browser = await _as(services, new_client, "new@example.com", {})
    page = await browser.get("/admin/")
    assert page.status_code == 200
    assert "tidings admin grant --email new@example.com" in page.text


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.SUPPORT, {"users", "events", "lists", "schema", "settings"}),
        (Role.EDITOR, {"users", "events", "lists", "schema", "settings", "lists/new"}),
        (Role.PUBLISHER, {"users", "events", "lists", "schema", "settings", "lists/new"}),
        (Role.ADMIN, {"users", "events", "lists", "schema", "settings", "lists/new", "keys"}),
    ],
)
async def test_pages_follow_the_role_in_the_project(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
    role: Role,
    allowed: set[str],
) -> None:
    browser = await _as(services, new_client, "someone@example.com", {project.id: role})
    for section in ("users", "events", "lists", "schema", "settings", "lists/new", "keys"):
        response = await browser.get(f"/admin/p/{project.id}/{section}")
        assert response.status_code == (200 if section in allowed else 403), section
        if section not in allowed:
            assert f"yours is {role.name.lower()}" in response.text


async def test_only_admins_change_settings_and_keys(
    services: Services, project: Project, clock: Clock, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    browser = await _as(services, new_client, "pub@example.com", {project.id: Role.PUBLISHER})
    page = await browser.get(f"/admin/p/{project.id}/settings")
    assert "Only admins of this project can change its settings." in page.text
    token = csrf_of(page.text)
    changed = await browser.post(
        f"/admin/p/{project.id}/settings",
        data={"csrf": token, "name": "Renamed", "locale": "", "timezone": ""},
    )
    assert changed.status_code == 403
    made = await browser.post(
        f"/admin/p/{project.id}/keys", data={"csrf": token, "scope": "secret"}
    )
    assert made.status_code == 403
    assert services.projects.get_project(project.id).name == "Test"


async def test_settings_are_saved_and_bad_values_shown_in_place(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url = f"/admin/p/{project.id}/settings"
    token = csrf_of((await owner.get(url)).text)
    bad = await owner.post(
        url, data={"csrf": token, "name": "Shop", "locale": "en_GB", "timezone": "Mars/Base"}
    )
    assert bad.status_code == 400
    assert "is not an IANA time zone name" in bad.text
    assert 'aria-invalid="true" aria-describedby="e-timezone"' in bad.text
    assert services.projects.get_project(project.id).name == "Test"  # nothing half-written
    good = await owner.post(
        url, data={"csrf": token, "name": "Shop", "locale": "en_GB", "timezone": "Europe/London"}
    )
    assert good.status_code == 303 and good.headers["location"] == f"{url}?saved=1"
    saved = services.projects.get_project(project.id)
    assert (saved.name, saved.locale, saved.timezone) == ("Shop", "en-GB", "Europe/London")
    assert "Saved." in (await owner.get(good.headers["location"])).text


async def test_a_form_without_its_csrf_token_changes_nothing(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url = f"/admin/p/{project.id}/settings"
    for data in ({}, {"csrf": "forged"}):
        response = await owner.post(
            url, data={**data, "name": "Hacked", "locale": "", "timezone": ""}
        )
        assert response.status_code == 403
        assert "CSRF token is missing or out of date" in response.text
    assert services.projects.get_project(project.id).name == "Test"


async def test_a_key_is_shown_once_works_and_can_be_revoked(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    url = f"/admin/p/{project.id}/keys"
    token = csrf_of((await owner.get(url)).text)
    made = await owner.post(
        url, data={"csrf": token, "scope": "secret", "role": "support", "name": "Support desk"}
    )
    assert made.status_code == 201
    key = made.text.split('id="new-key">', 1)[1].split("<", 1)[0]
    assert key.startswith("sk_")
    assert "never shown again" in made.text
    assert (await client.get("/api/client/users", headers=bearer(key))).status_code == 200
    again = await owner.get(url)
    assert key not in again.text and "Support desk" in again.text
    views = AdminViews(services.db.writer, services.db.reader)
    key_id = next(k.id for k in views.keys(project.id) if k.name == "Support desk")
    revoked = await owner.post(f"{url}/{key_id}/revoke", data={"csrf": token})
    assert revoked.status_code == 303 and revoked.headers["location"] == f"{url}?done=revoked"
    assert (await client.get("/api/client/users", headers=bearer(key))).status_code == 401
    assert "The key is revoked" in (await owner.get(revoked.headers["location"])).text


async def test_a_key_of_another_project_cannot_be_revoked_here(
    owner: httpx.AsyncClient, services: Services, project: Project, client: httpx.AsyncClient
) -> None:
    other = create_project(services)
    url = f"/admin/p/{project.id}/keys"
    token = csrf_of((await owner.get(url)).text)
    found = services.projects.find_key(hash_key(other.sk))
    assert found is not None
    response = await owner.post(f"{url}/{found.id}/revoke", data={"csrf": token})
    assert response.status_code == 404
    assert (await client.get("/api/client/users", headers=bearer(other.sk))).status_code == 200


async def test_key_form_errors_are_shown_in_place(
    owner: httpx.AsyncClient, project: Project
) -> None:
    url = f"/admin/p/{project.id}/keys"
    token = csrf_of((await owner.get(url)).text)
    bad = await owner.post(url, data={"csrf": token, "scope": "secret", "role": "boss"})
    assert bad.status_code == 400 and "unknown role &#39;boss&#39;" in bad.text
    public = await owner.post(url, data={"csrf": token, "scope": "public", "role": "admin"})
    assert public.status_code == 201 and 'id="new-key">pk_' in public.text


async def test_the_schema_page_lists_trait_and_event_paths(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    empty = await owner.get(f"/admin/p/{project.id}/schema")
    assert "No data seen yet." in empty.text
    await client.post(
        "/api/client/identify",
        json={"external_id": "u1", "data": {"plan": "pro", "address": {"city": "Oslo"}}},
        headers=bearer(project.pk),
    )
    await client.post(
        "/api/client/events",
        json=[{"name": "Order placed", "external_id": "u1", "data": {"total": 12.5}}],
        headers=bearer(project.pk),
    )
    await drain(services)
    page = await owner.get(f"/admin/p/{project.id}/schema")
    assert "<code>data.plan</code>" in page.text and "<code>data.address.city</code>" in page.text
    assert "Event “Order placed”" in page.text and "<code>data.total</code>" in page.text
