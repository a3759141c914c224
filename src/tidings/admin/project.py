"""A project's own pages: the home redirect and switcher, settings, API keys, data schema."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain import fields
from tidings.domain.auth import Role, Scope
from tidings.domain.errors import InvalidRequest
from tidings.domain.origins import normalise_origins

__all__ = ["project_routes"]

_KEY_NOTES = {
    "revoked": "The key is revoked: API servers refuse it within a few seconds.",
}


def home(page: Page) -> Response:
    """The first project the account may see, or a page saying how to make one."""
    projects = page.context()["projects"]
    if projects:
        return page.redirect(f"/admin/p/{projects[0][0]}/users")
    return page.render("no_projects.html")


def switch(page: Page) -> Response:
    """The project switcher's target (a GET form, so it works without JavaScript)."""
    raw = page.query("project")
    section = page.query("section") or "users"
    if section not in {
        "users",
        "events",
        "lists",
        "journeys",
        "campaigns",
        "reports",
        "schema",
        "keys",
        "settings",
        "providers",
        "subscriptions",
    }:
        section = "users"
    if not raw.isdigit():
        return page.redirect("/admin/")
    return page.redirect(f"/admin/p/{int(raw)}/{section}")


def settings(page: Page) -> Response:
    project = page.project
    assert project is not None
    values = {
        "name": project.name,
        "locale": project.locale or "",
        "timezone": project.timezone or "",
    }
    errors: dict[str, str] = {}
    saved = page.query("saved") == "1"
    if page.request.method == "POST":
        page.require(Role.ADMIN)
        values = {k: page.form.get(k, "").strip() for k in values}
        name, locale, timezone = (
            values["name"],
            values["locale"] or None,
            values["timezone"] or None,
        )
        if not name:
            errors["name"] = "A project needs a name."
        elif len(name) > 255:
            errors["name"] = "At most 255 characters."
        try:
            locale = fields.normalise_locale(locale) if locale else None
        except ValueError as exc:
            errors["locale"] = str(exc)
        try:
            timezone = fields.normalise_timezone(timezone) if timezone else None
        except ValueError as exc:
            errors["timezone"] = str(exc)
        if not errors:
            page.admin.views.update_project(page.pid, name=name, locale=locale, timezone=timezone)
            return page.redirect(page.url("/settings", saved="1"))
    return _settings_page(page, values=values, errors=errors, saved=saved)


def _settings_page(
    page: Page,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    saved: bool = False,
    origins: dict[str, str] | None = None,
    origin_error: str | None = None,
) -> Response:
    project = page.project
    assert project is not None
    if values is None:
        values = {
            "name": project.name,
            "locale": project.locale or "",
            "timezone": project.timezone or "",
        }
    if origins is None:
        allowed = project.allowed_origins
        origins = {
            "mode": "any" if allowed is None else "list",
            "origins": "\n".join(allowed or ()),
        }
    return page.render(
        "settings.html",
        nav="settings",
        values=values,
        errors=errors or {},
        saved=saved,
        origins=origins,
        origin_error=origin_error,
        origins_saved=page.query("saved") == "origins",
        status=400 if errors or origin_error else 200,
    )


def allowed_origins(page: Page) -> Response:
    """Where the project's public key may be used from in browsers (CORS)."""
    mode = page.form.get("mode", "")
    text = page.form.get("origins", "")
    kept = {"mode": mode if mode in {"any", "list"} else "list", "origins": text[:20_000]}
    if mode == "any":
        page.admin.services.projects.set_allowed_origins(page.pid, None)
        return page.redirect(page.url("/settings", saved="origins"))
    items = [item for item in text.replace(",", " ").split() if item]
    error = None
    if mode != "list":
        error = "Choose any origin, or only the origins listed."
    elif not items:
        error = "List at least one origin, or choose any origin."
    else:
        try:
            origins = normalise_origins(items)
        except InvalidRequest as exc:
            error = exc.message
    if error is not None:
        return _settings_page(page, origins=kept, origin_error=error)
    page.admin.services.projects.set_allowed_origins(page.pid, origins)
    return page.redirect(page.url("/settings", saved="origins"))


def keys(page: Page) -> Response:
    created = None
    errors: dict[str, str] = {}
    values = {"scope": "secret", "role": "admin", "name": ""}
    if page.request.method == "POST":
        values = {k: page.form.get(k, "").strip() for k in values}
        try:
            scope = Scope(values["scope"])
        except ValueError:
            scope = None
            errors["scope"] = "Choose public or secret."
        role = None
        if scope is Scope.SECRET:
            try:
                role = Role.parse(values["role"] or "admin")
            except ValueError as exc:
                errors["role"] = str(exc)
        if len(values["name"]) > 255:
            errors["name"] = "At most 255 characters."
        if not errors and scope is not None:
            created = page.admin.services.projects.create_key(
                page.pid, scope, role=role, name=values["name"] or None
            )
            values = {"scope": "secret", "role": "admin", "name": ""}
    rows = page.admin.views.keys(page.pid)
    return page.render(
        "keys.html",
        status=400 if errors else 201 if created else 200,
        nav="keys",
        rows=rows,
        created=created,
        values=values,
        errors=errors,
        note=_KEY_NOTES.get(page.query("done")),
        roles=[r.name.lower() for r in Role],
    )


def revoke_key(page: Page) -> Response:
    raw = page.param("key_id")
    if not raw.isdigit() or not page.admin.views.revoke_key(
        page.pid, int(raw), now=page.admin.clock()
    ):
        raise Refusal(404, "No such key", "This project has no such API key.")
    return page.redirect(page.url("/keys", done="revoked"))


def schema(page: Page) -> Response:
    paths, _ = page.admin.services.schema.list(page.pid)  # the first 1,000 paths
    traits = [p for p in paths if p["source"] == "trait"]
    by_event: dict[str, list[dict[str, object]]] = {}
    for p in paths:
        if p["source"] == "event":
            by_event.setdefault(str(p["event_name"]), []).append(p)
    return page.render("schema.html", nav="schema", traits=traits, by_event=by_event)


def project_routes(admin: Admin) -> list[Route]:
    return [
        route("/", home, admin, role=None),
        route("/switch", switch, admin, role=None),
        route("/p/{pid}/settings", settings, admin, methods=["GET", "POST"]),
        route(
            "/p/{pid}/settings/origins",
            allowed_origins,
            admin,
            role=Role.ADMIN,
            methods=["POST"],
        ),
        route("/p/{pid}/keys", keys, admin, role=Role.ADMIN, methods=["GET", "POST"]),
        route(
            "/p/{pid}/keys/{key_id}/revoke", revoke_key, admin, role=Role.ADMIN, methods=["POST"]
        ),
        route("/p/{pid}/schema", schema, admin),
    ]
