"""Lists: the index, a list with its members, the dynamic rule's editor (a visual builder
of conditions and groups over the data schema's paths, kept in sync with the validated
JSON text, errors shown where they are, a live count), and CSV imports into static lists.

The live count (``/lists/preview``) runs the rule over the project's newest
``PREVIEW_SAMPLE`` profiles only, so it answers in bounded time whatever the project's
size: exact for smaller projects, and said to be a sample otherwise.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import sqlalchemy as sa
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.web import Admin, Page, Refusal, json_response, route
from tidings.domain.auth import Role
from tidings.domain.errors import FieldError, InvalidRequest, TidingsError, ValidationFailed
from tidings.domain.membership import Tally, read_member_csv
from tidings.domain.rules import parse_rule, rule_to_json
from tidings.domain.rules.model import OPERATORS, PROFILE_COLUMNS, Rule
from tidings.segments.compile import compile_rule
from tidings.store.lists import UNSET, ListRow
from tidings.store.tables import profiles

__all__ = ["PREVIEW_SAMPLE", "check_rule", "lists_routes", "preview_count"]

PAGE_SIZE = 25
PREVIEW_SAMPLE = 10_000
IMPORT_CHUNK = 5_000  # rows a transaction, as `tidings import` does
EXAMPLE_RULE = {
    "type": "wrapper",
    "group": "parent",
    "operator": "and",
    "children": [
        {
            "type": "string",
            "group": "user",
            "path": "email",
            "operator": "ends with",
            "value": "@example.com",
        }
    ],
}


def check_rule(text: str) -> tuple[dict[str, Any] | None, Rule | None, list[FieldError]]:
    """The rule typed in the editor: (canonical JSON, parsed rule, []) or its problems,
    each at the path it concerns (``rule.children[0].operator``) or at the JSON's line."""
    if not text.strip():
        return None, None, [FieldError("rule", "parameter_missing", "A dynamic list needs a rule.")]
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"Not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        return None, None, [FieldError("rule", "parameter_invalid_format", message)]
    try:
        rule = parse_rule(raw, param="rule")
    except ValidationFailed as exc:
        return None, None, exc.errors or [FieldError("rule", exc.code, exc.message)]
    return rule_to_json(rule), rule, []


def preview_count(admin: Admin, project_id: int, rule: Rule, now: int) -> dict[str, Any]:
    """How many of the project's newest ``PREVIEW_SAMPLE`` profiles match the rule."""
    reader = admin.services.db.reader
    created, pid = profiles.c.created_at, profiles.c.id
    matching = compile_rule(rule, project_id=project_id, now=now, dialect=reader.dialect.name)
    with reader.connect() as conn:
        # The oldest profile of the sample: the rule then runs over one range of the
        # (project, created_at, id) index, whichever plan the database picks for it.
        edge = conn.execute(
            sa.select(created, pid)
            .where(profiles.c.project_id == project_id)
            .order_by(created.desc(), pid.desc())
            .offset(PREVIEW_SAMPLE - 1)
            .limit(1)
        ).first()
        if edge is not None:
            matching = matching.where(
                created >= edge.created_at, sa.or_(created > edge.created_at, pid >= edge.id)
            )
        matched = conn.execute(
            sa.select(sa.func.count()).select_from(matching.subquery())
        ).scalar_one()
        scanned = PREVIEW_SAMPLE
        if edge is None:
            scanned = conn.execute(
                sa.select(sa.func.count()).where(profiles.c.project_id == project_id)
            ).scalar_one()  # fewer than the sample: a small count
    return {"matched": int(matched), "scanned": int(scanned), "exact": edge is None}


def _tags(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip()[:255] for t in text.split(",") if t.strip()))[:100]


def index(page: Page) -> Response:
    cursor = page.query("cursor") or None
    try:
        found = page.admin.lists.page(page.pid, limit=PAGE_SIZE, cursor=cursor)
    except InvalidRequest:
        return page.redirect(page.url("/lists"))
    return page.render(
        "lists.html",
        nav="lists",
        rows=found.results,
        next_url=page.url("/lists", cursor=found.next_cursor) if found.next_cursor else None,
        prev_url=page.url("/lists", cursor=found.prev_cursor) if found.prev_cursor else None,
        may_edit=page.may(Role.EDITOR),
    )


def _paths(page: Page) -> list[dict[str, str]]:
    """Paths the rule editor offers, with their type: the profile's fields and the traits
    seen so far (objects left out: a rule compares values, not whole objects)."""
    fixed = [{"path": name, "type": kind} for name, kind in PROFILE_COLUMNS.items()]
    traits, _ = page.admin.services.schema.list(page.pid, source="trait", limit=500)
    seen = [
        {"path": f"data.{p['path']}", "type": p["type"]} for p in traits if p["type"] in OPERATORS
    ]
    unique = {p["path"]: p for p in fixed + seen}  # a path seen with two types: the last
    return list(unique.values())[:500]


def _editor(page: Page, template: str, **context: Any) -> Response:
    errors: dict[str, Any] = context.pop("errors", {})
    paths = _paths(page)
    return page.render(
        template,
        status=400 if errors else 200,
        nav="lists",
        errors=errors,
        paths=[p["path"] for p in paths],
        builder=json.dumps({"paths": paths, "operators": OPERATORS}),
        sample=PREVIEW_SAMPLE,
        **context,
    )


def create(page: Page) -> Response:
    values = {"name": "", "type": "dynamic", "rule": json.dumps(EXAMPLE_RULE, indent=2), "tags": ""}
    errors: dict[str, Any] = {}
    if page.request.method == "POST":
        values = {k: page.form.get(k, "") for k in values}
        name = values["name"].strip()
        if not name:
            errors["name"] = "A list needs a name."
        elif len(name) > 255:
            errors["name"] = "At most 255 characters."
        if values["type"] not in ("static", "dynamic"):
            errors["type"] = "Choose static or dynamic."
        rule_json = None
        if values["type"] == "dynamic":
            rule_json, _, problems = check_rule(values["rule"])
            if problems:
                errors["rule"] = problems
        if not errors:
            created = page.admin.lists.create(
                page.pid,
                name=name,
                type="dynamic" if values["type"] == "dynamic" else "static",
                rule=rule_json,
                tags=_tags(values["tags"]),
                now=page.admin.clock(),
            )
            return page.redirect(page.url(f"/lists/{created.id}"))
    return _editor(page, "list_form.html", values=values, errors=errors, current=None)


def _found(page: Page) -> ListRow:
    raw = page.param("list_id")
    row = page.admin.lists.get(page.pid, int(raw)) if raw.isdigit() and len(raw) < 18 else None
    if row is None:
        raise Refusal(404, "No such list", "This project has no such list (it may be deleted).")
    return row


def detail(page: Page) -> Response:
    current = _found(page)
    cursor = page.query("cursor") or None
    try:
        members = page.admin.lists.members(page.pid, current.id, limit=PAGE_SIZE, cursor=cursor)
    except InvalidRequest:
        return page.redirect(page.url(f"/lists/{current.id}"))
    base = f"/lists/{current.id}"
    return page.render(
        "list.html",
        nav="lists",
        current=current,
        rows=members.results,
        next_url=page.url(base, cursor=members.next_cursor) if members.next_cursor else None,
        prev_url=page.url(base, cursor=members.prev_cursor) if members.prev_cursor else None,
        may_edit=page.may(Role.EDITOR),
        note={"saved": "Saved."}.get(page.query("done")),
    )


def edit(page: Page) -> Response:
    current = _found(page)
    values = {
        "name": current.name,
        "rule": json.dumps(current.rule, indent=2) if current.rule is not None else "",
        "tags": ", ".join(current.tags),
    }
    errors: dict[str, Any] = {}
    if page.request.method == "POST":
        values = {k: page.form.get(k, "") for k in values}
        name = values["name"].strip()
        if not name:
            errors["name"] = "A list needs a name."
        elif len(name) > 255:
            errors["name"] = "At most 255 characters."
        rule_json: Any = UNSET
        if current.type == "dynamic":
            rule_json, _, problems = check_rule(values["rule"])
            if problems:
                errors["rule"] = problems
        if not errors:
            try:
                page.admin.lists.update(
                    page.pid,
                    current.id,
                    now=page.admin.clock(),
                    name=name,
                    rule=rule_json,
                    tags=_tags(values["tags"]),
                )
            except TidingsError as exc:
                raise Refusal(409, "Not saved", exc.message) from None
            return page.redirect(page.url(f"/lists/{current.id}", done="saved"))
    values["type"] = current.type
    return _editor(page, "list_form.html", values=values, errors=errors, current=current)


def delete(page: Page) -> Response:
    current = _found(page)
    page.admin.lists.delete(page.pid, current.id, now=page.admin.clock())
    return page.redirect(page.url("/lists"))


def preview(page: Page) -> Response:
    """The editor's check as one types: ``{"errors": [...]}`` or ``{"count": {...}}``."""
    try:
        body = json.loads(page.body or b"{}")
    except ValueError:
        body = {}
    text = body.get("rule") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise Refusal(400, "Bad request", 'Send {"rule": "<the rule as JSON text>"}.')
    _, rule, problems = check_rule(text)
    if rule is None:
        shown = [{"param": p.param, "message": p.message} for p in problems]
        return json_response({"errors": shown})
    return json_response(
        {"errors": [], "count": preview_count(page.admin, page.pid, rule, page.admin.clock())}
    )


def import_csv(page: Page) -> Response:
    """Members from a CSV: a form's ``csv`` field, or a ``text/csv`` body from the
    page's script, which sends a big file in chunks of rows (each with the header) and
    passes ``offset``, the file row of a chunk's first row, so reported rows are the
    file's. The answer is JSON for the script, the list page otherwise."""
    current = _found(page)
    scripted = "text/csv" in page.request.headers.get("content-type", "")
    raw = page.body if scripted else page.form.get("csv", "").encode()
    offset = int(page.query("offset")) if page.query("offset").isdigit() else 0
    error = None
    tally = Tally()
    if current.type != "static":
        error = "This list is dynamic: its members follow its rule."
    else:
        try:
            parsed = read_member_csv(raw.splitlines(keepends=True))
            rows = list(parsed.rows)  # read through first: a broken file writes nothing
            for start in range(0, len(rows), IMPORT_CHUNK):
                chunk = list(itertools.islice(rows, start, start + IMPORT_CHUNK))
                tally.merge(
                    page.admin.lists.add_members(
                        page.pid, current.id, parsed.kind, chunk, now=page.admin.clock()
                    )
                )
        except TidingsError as exc:
            error = exc.message
    summary = tally.summary(added=True)
    summary["not_found_rows"] = [r + offset for r in summary["not_found_rows"]]
    for bad in summary["invalid_rows"]:
        bad["row"] += offset
    if scripted:
        return json_response({"error": error, **summary}, status=400 if error else 200)
    return page.render(
        "list_import.html",
        status=400 if error else 200,
        nav="lists",
        current=current,
        error=error,
        summary=summary,
    )


def lists_routes(admin: Admin) -> list[Route]:
    editor = Role.EDITOR
    return [
        route("/p/{pid}/lists", index, admin),
        route("/p/{pid}/lists/new", create, admin, role=editor, methods=["GET", "POST"]),
        route("/p/{pid}/lists/preview", preview, admin, role=editor, methods=["POST"], json=True),
        route("/p/{pid}/lists/{list_id}", detail, admin),
        route("/p/{pid}/lists/{list_id}/edit", edit, admin, role=editor, methods=["GET", "POST"]),
        route("/p/{pid}/lists/{list_id}/delete", delete, admin, role=editor, methods=["POST"]),
        route("/p/{pid}/lists/{list_id}/import", import_csv, admin, role=editor, methods=["POST"]),
    ]
