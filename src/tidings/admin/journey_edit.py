"""Building journeys in the admin: a new journey, its step graph edited as validated JSON
(errors shown at the step they concern), archiving, and a dry run of one user.

The graph is the wire format of ``PUT /api/client/journeys/{id}/steps`` (``parse_steps``),
so what the editor saves is what the API would; every problem's ``param`` starts with the
step's uuid, which is how an error finds its step (``by_step``). Saving a draft keeps a
graph that cannot go live yet and lists what stops it, step by step; a live journey's
graph must stay publishable (``JourneyStore.put_steps`` refuses, nothing is written).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.journey_checks import StepErrors, by_step, check_graph, graph_text
from tidings.admin.journey_layout import BOX_H, BOX_W, layout
from tidings.admin.journeys import journey_row, journey_store
from tidings.admin.web import Admin, Page, Refusal, json_response, route
from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, FieldError, TidingsError, ValidationFailed
from tidings.domain.journeys import parse_steps
from tidings.journeys.simulate import simulate
from tidings.journeys.store import JourneyRow

__all__ = ["journey_edit_routes"]

EXAMPLE_GRAPH: dict[str, Any] = {
    "entry": {
        "type": "entrance",
        "name": "Signed up",
        "data": {"trigger": "event", "event_name": "Signed Up"},
        "children": [{"external_id": "wait-a-day"}],
    },
    "wait-a-day": {
        "type": "delay",
        "data": {"format": "duration", "duration": {"days": 1}},
        "children": [{"external_id": "done"}],
    },
    "done": {"type": "exit", "data": {}},
}
EXAMPLE_EVENTS = '[\n  {"name": "Signed Up", "at": 0, "data": {}}\n]'
MAX_NAME = 255


def _tags(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def _meta(values: Mapping[str, str], errors: dict[str, Any]) -> dict[str, Any]:
    """Name, description and tags from the form, as ``PATCH /journeys`` checks them."""
    name = values.get("name", "").strip()
    if not name:
        errors["name"] = "A journey needs a name."
    elif len(name) > MAX_NAME:
        errors["name"] = f"At most {MAX_NAME} characters."
    description = values.get("description", "").strip()
    if len(description) > 10_000:
        errors["description"] = "At most 10,000 characters."
    tags = _tags(values.get("tags", ""))
    if len(tags) > 50 or any(len(t) > 64 for t in tags):
        errors["tags"] = "Up to 50 tags of at most 64 characters each."
    return {"name": name, "description": description or None, "tags": tags}


def create(page: Page) -> Response:
    values = {"name": "", "description": "", "tags": ""}
    errors: dict[str, Any] = {}
    if page.request.method == "POST":
        values = {k: page.form.get(k, "") for k in values}
        given = _meta(values, errors)
        if not errors:
            store = journey_store(page)
            row = store.create(page.pid, settings={}, now=page.admin.clock(), **given)
            store.put_steps(page.pid, row.id, parse_steps(EXAMPLE_GRAPH), now=page.admin.clock())
            return page.redirect(page.url(f"/journeys/{row.id}/edit", done="created"))
    return page.render(
        "journey_new.html",
        status=400 if errors else 200,
        nav="journeys",
        values=values,
        errors=errors,
    )


def _editor(
    page: Page,
    row: JourneyRow,
    *,
    values: dict[str, str],
    errors: dict[str, Any],
    blocking: StepErrors,
    note: str | None = None,
    status: int = 200,
) -> Response:
    store = journey_store(page)
    stored = store.steps(row.id)
    _, _, live_problems = check_graph(graph_text(stored))
    shown = blocking if blocking else live_problems
    return page.render(
        "journey_edit.html",
        status=status,
        nav="journeys",
        journey=row,
        values=values,
        errors=errors,
        blocking=blocking,
        publish=live_problems,
        graph=layout(stored, store.stats(row.id)),
        graph_errors=shown.messages() if not blocking else {},
        box_w=BOX_W,
        box_h=BOX_H,
        note=note,
    )


def edit(page: Page) -> Response:
    store = journey_store(page)
    row = journey_row(page, store)
    values = {
        "name": row.name,
        "description": row.description or "",
        "tags": ", ".join(row.tags),
        "steps": graph_text(store.steps(row.id)),
    }
    note = {"created": "Journey created: edit its steps.", "saved": "Saved."}.get(
        page.query("done")
    )
    if page.request.method != "POST":
        return _editor(page, row, values=values, errors={}, blocking=StepErrors(), note=note)
    values = {k: page.form.get(k, "") for k in values}
    errors: dict[str, Any] = {}
    given = _meta(values, errors)
    steps, blocking, _ = check_graph(values["steps"])
    if errors or blocking or steps is None:
        return _editor(page, row, values=values, errors=errors, blocking=blocking, status=400)
    try:
        store.put_steps(page.pid, row.id, steps, now=page.admin.clock())
    except ValidationFailed as exc:  # a live journey's graph must stay publishable
        problems = exc.errors or [FieldError(exc.param or "steps", exc.code, exc.message)]
        blocking = by_step(problems, steps, values["steps"])
        blocking.general.insert(
            0,
            FieldError(
                "steps",
                exc.code,
                "A live journey's graph must stay able to run: nothing was saved.",
            ),
        )
        return _editor(page, row, values=values, errors={}, blocking=blocking, status=400)
    store.update(page.pid, row.id, now=page.admin.clock(), values=given)
    worker = page.admin.services.journey_worker
    if worker is not None:
        worker.wake.set()  # users on removed steps move on now (as the API does)
    return page.redirect(page.url(f"/journeys/{row.id}/edit", done="saved"))


def check(page: Page) -> Response:
    """The editor's text checked as one types: problems per step (JSON)."""
    try:
        text = json.loads(page.body or b"{}").get("steps", "")
    except (ValueError, AttributeError):
        text = None
    if not isinstance(text, str):
        raise Refusal(400, "Bad request", 'Send {"steps": "<the graph as JSON text>"}.')
    steps, blocking, publish = check_graph(text)
    return json_response(
        {
            "valid": steps is not None,
            "errors": blocking.as_json(),
            "publish": publish.as_json(),
            "steps": len(steps or {}),
        }
    )


def _archive(page: Page, archived: bool) -> Response:
    store = journey_store(page)
    row = journey_row(page, store)
    try:
        store.update(page.pid, row.id, now=page.admin.clock(), values={}, archived=archived)
    except (Conflict, ValidationFailed) as exc:
        raise Refusal(409, "Not changed", exc.message) from None
    done = "archived" if archived else "unarchived"
    return page.redirect(page.url(f"/journeys/{row.id}", done=done))


def archive(page: Page) -> Response:
    return _archive(page, True)


def unarchive(page: Page) -> Response:
    return _archive(page, False)


def _simulation_body(values: Mapping[str, str], errors: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    external_id = values.get("external_id", "").strip()
    if not external_id:
        errors["external_id"] = "Give the external id of a user (a stored one, or one to imagine)."
    else:
        body["external_id"] = external_id
    for name, kind, message in (
        ("events", list, 'A JSON list of events: [{"name": …, "at": seconds, "data": {…}}].'),
        ("traits", dict, "A JSON object of traits, or nothing."),
    ):
        text = values.get(name, "").strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            errors[name] = f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
            continue
        if not isinstance(value, kind):
            errors[name] = message
        elif name == "events":
            body["events"] = value
        else:
            body["user"] = {"external_id": external_id, "data": value}
    return body


def simulate_page(page: Page) -> Response:
    store = journey_store(page)
    row = journey_row(page, store)
    values = {"external_id": "", "events": EXAMPLE_EVENTS, "traits": ""}
    errors: dict[str, str] = {}
    result: dict[str, Any] | None = None
    if page.request.method == "POST":
        values = {k: page.form.get(k, "") for k in values}
        body = _simulation_body(values, errors)
        if not errors:
            try:
                result = simulate(page.admin.services.db.reader, row, body, now=page.admin.clock())
            except TidingsError as exc:
                problems = exc.errors or [FieldError(exc.param or "", exc.code, exc.message)]
                for problem in problems:
                    where = problem.param.split("[", 1)[0].split(".", 1)[0]
                    key = {"user": "traits", "external_id": "external_id"}.get(where, "events")
                    message = problem.message
                    if key == "external_id" and "No user" in message:
                        message += " Give traits to imagine this user."
                    if key == "events" and problem.param.startswith("events["):
                        message = f"{problem.param}: {message}"
                    errors.setdefault(key, message)
    steps = store.steps(row.id)
    visited = [p["step_uuid"] for p in (result or {}).get("path", [])]
    return page.render(
        "journey_simulate.html",
        status=400 if errors else 200,
        nav="journeys",
        journey=row,
        values=values,
        errors=errors,
        result=result,
        steps=steps,
        campaigns=_campaign_names(page, result),
        graph=layout(steps, store.stats(row.id)),
        visited=set(visited),
        box_w=BOX_W,
        box_h=BOX_H,
    )


def _campaign_names(page: Page, result: Mapping[str, Any] | None) -> dict[int, str]:
    messaging = page.admin.services.messaging
    names: dict[int, str] = {}
    if messaging is None or not result:
        return names
    for message in result.get("messages", []):
        cid = message["campaign_id"]
        if isinstance(cid, int) and cid not in names:
            try:
                names[cid] = messaging.campaigns.campaign(page.pid, cid)["name"]
            except TidingsError:
                names[cid] = ""
    return names


def journey_edit_routes(admin: Admin) -> list[Route]:
    base = "/p/{pid}/journeys/{journey_id}"
    both = ["GET", "POST"]
    return [
        route("/p/{pid}/journeys/new", create, admin, role=Role.EDITOR, methods=both),
        route(base + "/edit", edit, admin, role=Role.EDITOR, methods=both),
        route(base + "/check", check, admin, role=Role.EDITOR, methods=["POST"], json=True),
        route(base + "/archive", archive, admin, role=Role.PUBLISHER, methods=["POST"]),
        route(base + "/unarchive", unarchive, admin, role=Role.EDITOR, methods=["POST"]),
        route(base + "/simulate", simulate_page, admin, methods=both),
    ]
