"""The Team page (admins manage who works on a project) and one's own password."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests.admin.conftest import PASSWORD, Clock, csrf_of, make_account, sign_in
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.admin.test_project_pages import _as
from tests.conftest import Project
from tidings.admin.team import INVITES_PER_WINDOW
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.store.admin import AdminStore
from tidings.store.tables_admin import admin_accounts, admin_roles

NEW_PASSWORD = "a brand new passphrase"


def _roles(services: Services, project_id: int) -> dict[str, str]:
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(admin_accounts.c.email, admin_roles.c.role)
            .select_from(
                admin_roles.join(admin_accounts, admin_accounts.c.id == admin_roles.c.account_id)
            )
            .where(admin_roles.c.project_id == project_id)
        ).all()
    return {str(r.email): str(r.role) for r in rows}


def _account_id(services: Services, email: str) -> int:
    with services.db.reader.connect() as conn:
        return int(
            conn.execute(
                sa.select(admin_accounts.c.id).where(admin_accounts.c.email == email)
            ).scalar_one()
        )


async def test_an_admin_invites_a_new_account_who_then_signs_in(
    owner: httpx.AsyncClient,
    services: Services,
    project: Project,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/team")
    assert page.status_code == 200
    assert "owner@example.com" in page.text and "Nobody else works on this project" in page.text
    assert f'href="/admin/p/{project.id}/team" aria-current="page">Team<' in page.text
    made = await owner.post(
        f"/admin/p/{project.id}/team",
        data={"csrf": csrf_of(page.text), "email": "Ann@Example.com", "role": "editor"},
    )
    assert made.status_code == 200
    password = re.search(r'<code class="secret" id="new-password">([^<]+)</code>', made.text)
    assert password, made.text
    assert _roles(services, project.id) == {"ann@example.com": "editor"}
    again = await owner.get(f"/admin/p/{project.id}/team")
    assert password.group(1) not in again.text  # shown once
    ann = new_client()
    assert (await sign_in(ann, "ann@example.com", password.group(1))).status_code == 303
    lists = await ann.get(f"/admin/p/{project.id}/lists")
    assert lists.status_code == 200 and "· editor" in lists.text
    assert ">Team<" not in lists.text  # not offered to a non-admin


async def test_an_existing_account_gets_access_and_a_member_is_not_invited_twice(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    make_account(services, "bo@example.com", roles={})
    page = await owner.get(f"/admin/p/{project.id}/team")
    token = csrf_of(page.text)
    added = await owner.post(
        f"/admin/p/{project.id}/team",
        data={"csrf": token, "email": "bo@example.com", "role": "support"},
    )
    assert added.status_code == 200
    assert "bo@example.com now has the support role" in added.text
    assert 'id="new-password"' not in added.text
    twice = await owner.post(
        f"/admin/p/{project.id}/team",
        data={"csrf": token, "email": "bo@example.com", "role": "admin"},
    )
    assert twice.status_code == 409 and "on this team already" in twice.text
    assert _roles(services, project.id) == {"bo@example.com": "support"}


async def test_bad_invitations_are_shown_in_place_and_write_nothing(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    token = csrf_of((await owner.get(f"/admin/p/{project.id}/team")).text)
    for email, role, message in [
        ("", "editor", "Enter the email address"),
        ("not an email", "editor", "Enter an email address such as"),
        ("cy@example.com", "owner", "Choose one of admin, publisher, editor, support."),
    ]:
        answer = await owner.post(
            f"/admin/p/{project.id}/team", data={"csrf": token, "email": email, "role": role}
        )
        assert answer.status_code == 400 and message in answer.text
    assert _roles(services, project.id) == {}
    assert AdminStore(services.db.writer, services.db.reader).count_accounts() == 1


async def test_roles_change_and_access_is_removed(
    owner: httpx.AsyncClient,
    services: Services,
    project: Project,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    dee = await _as(services, new_client, "dee@example.com", {project.id: Role.SUPPORT})
    dee_id = _account_id(services, "dee@example.com")
    token = csrf_of((await owner.get(f"/admin/p/{project.id}/team")).text)
    changed = await owner.post(
        f"/admin/p/{project.id}/team/{dee_id}/role", data={"csrf": token, "role": "publisher"}
    )
    assert changed.status_code == 303 and changed.headers["location"].endswith("done=role")
    assert _roles(services, project.id) == {"dee@example.com": "publisher"}
    bad = await owner.post(
        f"/admin/p/{project.id}/team/{dee_id}/role", data={"csrf": token, "role": "god"}
    )
    assert bad.status_code == 400
    assert _roles(services, project.id) == {"dee@example.com": "publisher"}
    removed = await owner.post(f"/admin/p/{project.id}/team/{dee_id}/remove", data={"csrf": token})
    assert removed.status_code == 303
    assert _roles(services, project.id) == {}
    assert (await dee.get(f"/admin/p/{project.id}/users")).status_code == 404
    missing = await owner.post(f"/admin/p/{project.id}/team/{dee_id}/remove", data={"csrf": token})
    assert missing.status_code == 404


async def test_a_non_admin_cannot_see_or_manage_the_team(
    owner: httpx.AsyncClient,
    services: Services,
    project: Project,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    make_account(services, "eve@example.com", roles={project.id: Role.SUPPORT})
    eve_id = _account_id(services, "eve@example.com")
    pub = await _as(services, new_client, "pub@example.com", {project.id: Role.PUBLISHER})
    token = csrf_of((await pub.get(f"/admin/p/{project.id}/users")).text)
    assert (await pub.get(f"/admin/p/{project.id}/team")).status_code == 403
    for path, data in [
        ("/team", {"email": "mallory@example.com", "role": "admin"}),
        (f"/team/{eve_id}/role", {"role": "admin"}),
        (f"/team/{eve_id}/remove", {}),
    ]:
        answer = await pub.post(f"/admin/p/{project.id}{path}", data={"csrf": token, **data})
        assert answer.status_code == 403, path
    assert _roles(services, project.id) == {
        "eve@example.com": "support",
        "pub@example.com": "publisher",
    }
    assert (
        AdminStore(services.db.writer, services.db.reader).credentials("mallory@example.com")
        is None
    )


async def test_team_forms_need_their_csrf_token(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    make_account(services, "fay@example.com", roles={project.id: Role.EDITOR})
    fay_id = _account_id(services, "fay@example.com")
    for path, data in [
        ("/team", {"email": "gil@example.com", "role": "admin"}),
        (f"/team/{fay_id}/role", {"role": "admin"}),
        (f"/team/{fay_id}/remove", {}),
    ]:
        answer = await owner.post(f"/admin/p/{project.id}{path}", data={"csrf": "forged", **data})
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert _roles(services, project.id) == {"fay@example.com": "editor"}
    answer = await owner.post(
        "/admin/account", data={"current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD}
    )
    assert answer.status_code == 403


async def test_the_last_admin_cannot_remove_or_demote_themself(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    """No owner account here: the project's only admin is its last way to be managed."""
    ida = await _as(services, new_client, "ida@example.com", {project.id: Role.ADMIN})
    ida_id = _account_id(services, "ida@example.com")
    token = csrf_of((await ida.get(f"/admin/p/{project.id}/team")).text)
    for path, data in [
        (f"/team/{ida_id}/remove", {}),
        (f"/team/{ida_id}/role", {"role": "editor"}),
    ]:
        answer = await ida.post(f"/admin/p/{project.id}{path}", data={"csrf": token, **data})
        assert answer.status_code == 409 and "last admin" in answer.text
    assert _roles(services, project.id) == {"ida@example.com": "admin"}
    # With a second admin, one may leave.
    make_account(services, "jo@example.com", roles={project.id: Role.ADMIN})
    left = await ida.post(f"/admin/p/{project.id}/team/{ida_id}/remove", data={"csrf": token})
    assert left.status_code == 303 and left.headers["location"] == "/admin/"
    assert _roles(services, project.id) == {"jo@example.com": "admin"}


async def test_an_owner_account_is_not_removed_from_the_team_page(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    owner_id = _account_id(services, "owner@example.com")
    page = await owner.get(f"/admin/p/{project.id}/team")
    assert f"/team/{owner_id}/remove" not in page.text
    answer = await owner.post(
        f"/admin/p/{project.id}/team/{owner_id}/remove", data={"csrf": csrf_of(page.text)}
    )
    assert answer.status_code == 409 and "owner account" in answer.text
    assert (await owner.get(f"/admin/p/{project.id}/team")).status_code == 200


async def test_invitations_are_rate_limited(
    owner: httpx.AsyncClient, services: Services, project: Project, clock: Clock
) -> None:
    token = csrf_of((await owner.get(f"/admin/p/{project.id}/team")).text)
    for n in range(INVITES_PER_WINDOW):
        answer = await owner.post(
            f"/admin/p/{project.id}/team",
            data={"csrf": token, "email": f"n{n}@example.com", "role": "support"},
        )
        assert answer.status_code == 200, answer.text
    over = await owner.post(
        f"/admin/p/{project.id}/team",
        data={"csrf": token, "email": "one-more@example.com", "role": "support"},
    )
    assert over.status_code == 429 and "Too many invitations" in over.text
    assert "one-more@example.com" not in _roles(services, project.id)
    clock.advance(16 * 60)
    later = await owner.post(
        f"/admin/p/{project.id}/team",
        data={"csrf": token, "email": "one-more@example.com", "role": "support"},
    )
    assert later.status_code == 200


async def test_payloads_in_account_names_stay_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for n, payload in enumerate(PAYLOADS):
        make_account(services, f"{payload}{n}@example.com", roles={project.id: Role.EDITOR})
    page = await owner.get(f"/admin/p/{project.id}/team")
    assert page.status_code == 200
    assert_inert(page.text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;0@example.com" in page.text


async def test_change_ones_own_password(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    kim = await _as(services, new_client, "kim@example.com", {project.id: Role.SUPPORT})
    other = new_client()
    assert (await sign_in(other, "kim@example.com")).status_code == 303
    page = await kim.get("/admin/account")
    assert page.status_code == 200 and "Change your password" in page.text
    token = csrf_of(page.text)
    wrong = await kim.post(
        "/admin/account",
        data={
            "csrf": token,
            "current": "not it at all",
            "new": NEW_PASSWORD,
            "again": NEW_PASSWORD,
        },
    )
    assert wrong.status_code == 400 and "not your current password" in wrong.text
    for new, again, message in [
        ("short", "short", "at least 10 characters"),
        (NEW_PASSWORD, NEW_PASSWORD + "!", "The two new passwords differ."),
    ]:
        answer = await kim.post(
            "/admin/account", data={"csrf": token, "current": PASSWORD, "new": new, "again": again}
        )
        assert answer.status_code == 400 and message in answer.text
    done = await kim.post(
        "/admin/account",
        data={"csrf": token, "current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD},
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/account?done=password"
    shown = await kim.get(done.headers["location"])
    assert shown.status_code == 200 and "Password changed." in shown.text  # still signed in
    assert (await other.get("/admin/account")).status_code == 303  # the other browser is out
    stored = AdminStore(services.db.writer, services.db.reader).credentials("kim@example.com")
    assert stored is not None and stored[1].startswith("$argon2id$")
    fresh = new_client()
    assert (await sign_in(fresh, "kim@example.com")).status_code == 401
    assert (await sign_in(fresh, "kim@example.com", NEW_PASSWORD)).status_code == 303


async def test_wrong_current_passwords_are_rate_limited(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    lou = await _as(services, new_client, "lou@example.com", {project.id: Role.SUPPORT})
    token = csrf_of((await lou.get("/admin/account")).text)
    form = {"csrf": token, "new": NEW_PASSWORD, "again": NEW_PASSWORD}
    for _ in range(5):
        answer = await lou.post("/admin/account", data={**form, "current": "guess guess guess"})
        assert answer.status_code == 400
    blocked = await lou.post("/admin/account", data={**form, "current": PASSWORD})
    assert blocked.status_code == 429 and "Too many wrong passwords" in blocked.text
    assert (await sign_in(new_client(), "lou@example.com")).status_code == 303  # unchanged
    clock.advance(16 * 60)
    assert (await lou.post("/admin/account", data={**form, "current": PASSWORD})).status_code == 303
