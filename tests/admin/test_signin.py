"""Signing in and out: passwords, CSRF on the sign-in form, cookies, limits, sessions."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.admin.conftest import PASSWORD, Clock, admin_of, csrf_of, make_account, sign_in
from tests.conftest import Project, make_services
from tidings.api.app import TidingsApp, create_app
from tidings.bootstrap import Services
from tidings.domain.admin import LoginLimits
from tidings.settings import Settings


async def test_sign_in_sets_a_session_cookie_and_opens_the_first_project(
    services: Services, project: Project, clock: Clock, client: httpx.AsyncClient
) -> None:
    make_account(services, "ann@example.com", owner=True)
    response = await sign_in(client, "Ann@Example.com")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("tidings_admin=")
    )
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/admin" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    home = await client.get("/admin/")
    assert home.status_code == 303 and home.headers["location"] == f"/admin/p/{project.id}/users"
    users = await client.get(home.headers["location"])
    assert users.status_code == 200 and "ann@example.com" in users.text


async def test_over_https_the_session_cookie_is_secure(
    services: Services, project: Project, clock: Clock, app: TidingsApp
) -> None:
    make_account(services, "ann@example.com", owner=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://tidings.test") as browser:
        response = await sign_in(browser, "ann@example.com")
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("tidings_admin=")
    )
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


async def test_a_wrong_password_or_unknown_email_is_refused_alike(
    services: Services, clock: Clock, client: httpx.AsyncClient
) -> None:
    make_account(services, "ann@example.com", owner=True)
    for email, password in (("ann@example.com", "not the password"), ("bob@example.com", PASSWORD)):
        response = await sign_in(client, email, password)
        assert response.status_code == 401
        assert "Wrong email or password." in response.text
        assert "tidings_admin=" not in response.headers.get("set-cookie", "")
    assert (await client.get("/admin/")).status_code == 303  # still to the sign-in page
    assert (await client.get("/admin/")).headers["location"].startswith("/admin/login")


async def test_the_sign_in_form_needs_its_csrf_token(
    services: Services, clock: Clock, client: httpx.AsyncClient
) -> None:
    make_account(services, "ann@example.com", owner=True)
    await client.get("/admin/login")  # the token's cookie is set
    fields = {"email": "ann@example.com", "password": PASSWORD}
    missing = await client.post("/admin/login", data=fields)
    wrong = await client.post("/admin/login", data={**fields, "csrf": "forged"})
    for response in (missing, wrong):
        assert response.status_code == 403
        assert "Form refused" in response.text
        assert "tidings_admin=" not in response.headers.get("set-cookie", "")


async def test_failed_sign_ins_are_limited_per_account_then_allowed_again(
    services: Services, clock: Clock, client: httpx.AsyncClient
) -> None:
    make_account(services, "ann@example.com", owner=True)
    limits = LoginLimits()
    for _ in range(limits.per_account):
        assert (await sign_in(client, "ann@example.com", "wrong password")).status_code == 401
    blocked = await sign_in(client, "ann@example.com")  # even the right password waits
    assert blocked.status_code == 429
    assert "Too many failed sign-ins. Try again in 15 minutes." in blocked.text
    assert int(blocked.headers["retry-after"]) == limits.window // 1_000_000
    clock.advance(limits.window / 1_000_000 + 1)
    assert (await sign_in(client, "ann@example.com")).status_code == 303


async def test_failed_sign_ins_are_limited_per_address_across_accounts(
    services: Services, clock: Clock, app: TidingsApp, client: httpx.AsyncClient
) -> None:
    admin_of(app).limits = LoginLimits(per_account=100, per_address=3)
    make_account(services, "ann@example.com", owner=True)
    for n in range(3):
        assert (await sign_in(client, f"guess{n}@example.com", "x" * 12)).status_code == 401
    assert (await sign_in(client, "ann@example.com")).status_code == 429


async def test_api_nodes_share_the_failed_sign_ins(
    services: Services, settings: Settings, clock: Clock, client: httpx.AsyncClient
) -> None:
    """A second API node over the same database refuses what the first one counted."""
    make_account(services, "ann@example.com", owner=True)
    for _ in range(LoginLimits().per_account):
        assert (await sign_in(client, "ann@example.com", "wrong password")).status_code == 401
    other_services = make_services(settings.model_copy(update={"run_worker": False}))
    try:
        other = create_app(other_services, manage_lifecycle=False)
        admin_of(other).clock = clock
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as browser:
            assert (await sign_in(browser, "ann@example.com")).status_code == 429
    finally:
        other_services.close()


async def test_sign_out_ends_the_session_and_needs_the_csrf_token(
    owner: httpx.AsyncClient, project: Project
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/users")
    refused = await owner.post("/admin/logout", data={})
    assert refused.status_code == 403
    assert (await owner.get(f"/admin/p/{project.id}/users")).status_code == 200
    out = await owner.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    after = await owner.get(f"/admin/p/{project.id}/users")
    assert after.status_code == 303 and after.headers["location"].startswith("/admin/login")


async def test_a_stolen_cookie_is_useless_after_sign_out(
    owner: httpx.AsyncClient, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/users")
    thief = new_client()
    thief.cookies.set("tidings_admin", owner.cookies["tidings_admin"], path="/admin")
    assert (await thief.get(f"/admin/p/{project.id}/users")).status_code == 200
    await owner.post("/admin/logout", data={"csrf": csrf_of(page.text)})
    assert (await thief.get(f"/admin/p/{project.id}/users")).status_code == 303


async def test_sessions_end_after_their_lifetime(
    owner: httpx.AsyncClient, project: Project, clock: Clock
) -> None:
    assert (await owner.get(f"/admin/p/{project.id}/users")).status_code == 200
    clock.advance(12 * 3600 + 1)
    ended = await owner.get(f"/admin/p/{project.id}/users?q=a")
    assert ended.status_code == 303
    assert ended.headers["location"] == (
        f"/admin/login?next=%2Fadmin%2Fp%2F{project.id}%2Fusers%3Fq%3Da"
    )


async def test_signing_in_returns_to_the_page_asked_for_on_this_site_only(
    services: Services, project: Project, clock: Clock, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    make_account(services, "ann@example.com", owner=True)
    wanted = f"/admin/p/{project.id}/lists"
    back = await sign_in(new_client(), "ann@example.com", next=wanted)
    assert back.headers["location"] == wanted
    for elsewhere in ("//evil.example/admin/", "https://evil.example/", "/admin\\@evil"):
        away = await sign_in(new_client(), "ann@example.com", next=elsewhere)
        assert away.headers["location"] == "/admin/"


async def test_a_post_without_a_session_is_refused(
    client: httpx.AsyncClient, project: Project
) -> None:
    response = await client.post(f"/admin/p/{project.id}/keys", data={"scope": "secret"})
    assert response.status_code == 401
    assert "sign in again" in response.text
