"""The team of a project, and one's own password.

- ``/p/{pid}/team`` (admins of the project): the accounts with access to it (owner
  accounts, admins of every project, are listed but managed with ``tidings admin``),
  an invitation form (a new account gets a one-time password, shown once; an existing
  account gets the role), a role per account, and removal of access. The project always
  keeps an admin (``store.admin_team.ProjectTeam.set_role``).
- ``/account`` (anyone signed in): change one's password (argon2), the current one
  required. Other browsers of the account are signed out; this one stays signed in.

Failed current passwords and invitations are counted in the sign-in failure log
(subjects ``password:<id>`` and ``invite:<id>``), so every API node applies the same
limits: 5 wrong current passwords, 20 invitations, per account in the sign-in window.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.signin import open_session
from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.admin import (
    MAX_PASSWORD_LENGTH,
    LoginLimits,
    login_wait,
    new_token,
    password_problem,
)
from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, NotFound
from tidings.store.admin_team import ProjectTeam

__all__ = ["INVITES_PER_WINDOW", "team_routes"]

INVITES_PER_WINDOW = 20
ROLES = [r.name.lower() for r in sorted(Role, reverse=True)]
_NOTES = {"role": "Role changed.", "removed": "Access removed."}


def _team(page: Page) -> ProjectTeam:
    db = page.admin.services.db
    return ProjectTeam(db.writer, db.reader)


def _wait(page: Page, subject: str, allowed: int) -> int:
    """Microseconds until ``subject`` may try again (0: now)."""
    limits: LoginLimits = page.admin.limits
    now = page.admin.clock()
    failures = page.admin.store.failures([subject], since=now - limits.window)[subject]
    return login_wait(failures, [], LoginLimits(per_account=allowed), now)


def _record(page: Page, subject: str) -> None:
    now = page.admin.clock()
    page.admin.store.record_failure(
        [subject], now=now, forget_before=now - page.admin.limits.window
    )


def _minutes(wait: int) -> str:
    minutes = max(1, math.ceil(wait / 60_000_000))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _email_problem(email: str) -> str | None:
    if not email:
        return "Enter the email address of the person to invite."
    if len(email) > 320 or "@" not in email.strip("@") or any(c.isspace() for c in email):
        return "Enter an email address such as name@example.com."
    return None


def team(page: Page, **context: Any) -> Response:
    values = context.pop("values", {"email": "", "role": "editor"})
    errors = context.pop("errors", {})
    status = context.pop("status", 400 if errors else 200)
    assert page.session is not None
    return page.render(
        "team.html",
        status=status,
        nav="team",
        members=_team(page).members(page.pid),
        me=page.session.account.id,
        roles=ROLES,
        values=values,
        errors=errors,
        note=context.pop("note", _NOTES.get(page.query("done"))),
        **context,
    )


def invite(page: Page) -> Response:
    assert page.session is not None
    email = page.form.get("email", "").strip().lower()
    role_name = page.form.get("role", "")
    values = {"email": email[:320], "role": role_name}
    errors: dict[str, str] = {}
    problem = _email_problem(email)
    if problem:
        errors["email"] = problem
    if role_name not in ROLES:
        errors["role"] = "Choose one of " + ", ".join(ROLES) + "."
    if errors:
        return team(page, values=values, errors=errors)
    subject = f"invite:{page.session.account.id}"
    wait = _wait(page, subject, INVITES_PER_WINDOW)
    if wait > 0:
        errors["email"] = f"Too many invitations at once. Try again in {_minutes(wait)}."
        return team(page, values=values, errors=errors, status=429)
    _record(page, subject)
    role = Role.parse(role_name)
    store = _team(page)
    existing = store.account_id(email)
    if existing is not None:
        if store.member(page.pid, existing) is not None:
            errors["email"] = f"{email} is on this team already: change the role in the table."
            return team(page, values=values, errors=errors, status=409)
        store.set_role(page.pid, existing, role)
        return team(page, note=f"{email} now has the {role_name} role in this project.")
    password = new_token()[:20]
    try:
        store.create_member(
            page.pid, email, page.admin.passwords.hash(password), role, now=page.admin.clock()
        )
    except Conflict as exc:
        errors["email"] = exc.message
        return team(page, values=values, errors=errors, status=409)
    return team(page, invited={"email": email, "password": password, "role": role_name})


def _member_id(page: Page) -> int:
    raw = page.param("account_id")
    if not raw.isdigit() or len(raw) > 12:
        raise Refusal(404, "No such account", "This project's team has no such account.")
    if _team(page).member(page.pid, int(raw)) is None:
        raise Refusal(404, "No such account", "This project's team has no such account.")
    return int(raw)


def _change(page: Page, role: Role | None, done: str) -> Response:
    account_id = _member_id(page)
    try:
        _team(page).set_role(page.pid, account_id, role)
    except (Conflict, NotFound) as exc:
        return team(page, errors={"team": exc.message}, status=409)
    if role is None and page.session is not None and account_id == page.session.account.id:
        return page.redirect("/admin/")  # one's own access is gone
    return page.redirect(page.url("/team", done=done))


def change_role(page: Page) -> Response:
    name = page.form.get("role", "")
    if name not in ROLES:
        return team(page, errors={"team": "Choose one of " + ", ".join(ROLES) + "."})
    return _change(page, Role.parse(name), "role")


def remove(page: Page) -> Response:
    return _change(page, None, "removed")


def account(page: Page) -> Response:
    """A new password for oneself (the form's POST)."""
    assert page.session is not None
    me = page.session.account
    errors: dict[str, str] = {}
    current = page.form.get("current", "")[: MAX_PASSWORD_LENGTH + 1]
    new = page.form.get("new", "")[: MAX_PASSWORD_LENGTH + 1]
    again = page.form.get("again", "")[: MAX_PASSWORD_LENGTH + 1]
    subject = f"password:{me.id}"
    wait = _wait(page, subject, page.admin.limits.per_account)
    if wait > 0:
        errors["current"] = f"Too many wrong passwords. Try again in {_minutes(wait)}."
        return page.render("account.html", status=429, errors=errors, note=None)
    found = page.admin.store.credentials(me.email)
    if found is None or not page.admin.passwords.verify(found[1], current):
        _record(page, subject)
        errors["current"] = "That is not your current password."
    problem = password_problem(new)
    if problem:
        errors["new"] = problem
    elif new != again:
        errors["again"] = "The two new passwords differ."
    elif new == current:
        errors["new"] = "Choose a password other than the current one."
    if errors:
        return page.render("account.html", status=400, errors=errors, note=None)
    now = page.admin.clock()
    page.admin.store.set_password(me.email, page.admin.passwords.hash(new), now=now)  # all out
    page.admin.store.clear_failures(subject)
    response = page.redirect("/admin/account?done=password")
    open_session(page.admin, page.request, response, me.id, now)  # this browser stays in
    return response


def account_page(page: Page) -> Response:
    if page.request.method == "POST":
        return account(page)
    note = "Password changed. Your other browsers are signed out." if page.query("done") else None
    return page.render("account.html", errors={}, note=note)


def team_routes(admin: Admin) -> list[Route]:
    boss = Role.ADMIN
    return [
        route("/p/{pid}/team", team, admin, role=boss),
        route("/p/{pid}/team", invite, admin, role=boss, methods=["POST"]),
        route("/p/{pid}/team/{account_id}/role", change_role, admin, role=boss, methods=["POST"]),
        route("/p/{pid}/team/{account_id}/remove", remove, admin, role=boss, methods=["POST"]),
        route("/account", account_page, admin, role=None, methods=["GET", "POST"]),
    ]
