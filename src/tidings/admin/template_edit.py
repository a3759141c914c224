"""A campaign's templates in the admin: an editor per locale with a live preview, the
template's Liquid/MJML errors at their field with line and column, and a proof send.

Saving goes through ``CampaignStore.create_template``/``update_template``, which check
the data as the API does (``messaging.templates.prepare``). The preview renders what is
in the form, saved or not, on the server (``POST …/preview``) into the editor's
``<iframe sandbox="">``: the form is submitted *into* the frame (``formtarget``), and the
answer carries the preview's own policy (no script, no form, no connection), so nothing
in a template runs. With JavaScript, the editor re-submits it as one types and asks
``…/check`` for the errors; without, the Preview button does the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.campaigns import (
    campaign_row,
    campaign_store,
    preview_response,
    render_message,
    template_row,
)
from tidings.admin.web import Admin, Page, json_response, route
from tidings.domain import fields as wire_fields
from tidings.domain.auth import Role
from tidings.domain.channels import EmailMessage, Outcome
from tidings.domain.errors import FieldError, TidingsError
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.providers import build_adapter
from tidings.messaging.templates import prepare

__all__ = ["FIELDS", "template_edit_routes"]


@dataclass(frozen=True)
class Field:
    name: str  # the form field, and the data path ("from.address")
    label: str
    kind: str = "input"  # input | textarea | select
    choices: tuple[str, ...] = ()
    hint: str = ""


FIELDS: dict[str, tuple[Field, ...]] = {
    "email": (
        Field("from.name", "From name"),
        Field("from.address", "From address"),
        Field("reply_to", "Reply-to"),
        Field("subject", "Subject"),
        Field("preheader", "Preheader"),
        Field("format", "Body format", "select", ("html", "mjml")),
        Field(
            "body",
            "Body",
            "textarea",
            hint="HTML or MJML, with Liquid: {{ user.first_name | default: 'there' }}.",
        ),
        Field("text", "Text part", "textarea", hint="Optional: made from the HTML when empty."),
    ),
    "text": (Field("text", "Text", "textarea"),),
    "push": (Field("title", "Title"), Field("body", "Body", "textarea"), Field("url", "URL")),
    "webhook": (
        Field("method", "Method", "select", ("POST", "GET", "PUT", "PATCH", "DELETE")),
        Field("endpoint", "Endpoint"),
        Field("body", "Body", "textarea"),
    ),
    "in_app": (
        Field("type", "Type", "select", ("banner", "alert", "html")),
        Field("title", "Title"),
        Field("body", "Body", "textarea"),
        Field("html", "HTML", "textarea"),
        Field("image", "Image URL"),
    ),
}
STARTERS: dict[str, dict[str, Any]] = {
    "email": {
        "from": {"name": "", "address": ""},
        "subject": "",
        "html": "<p>Hello {{ user.first_name | default: 'there' }},</p>\n",
    },
    "text": {"text": "Hello {{ user.first_name | default: 'there' }}"},
    "push": {"title": "", "body": ""},
    "webhook": {"method": "POST", "endpoint": "https://"},
    "in_app": {"type": "banner", "title": "", "body": ""},
}


def form_values(channel: str, data: Mapping[str, Any]) -> dict[str, str]:
    """A template's ``data`` as the editor's fields."""
    out: dict[str, str] = {}
    for f in FIELDS[channel]:
        if f.name == "format":
            out[f.name] = "mjml" if data.get("mjml") else "html"
        elif channel == "email" and f.name == "body":
            out[f.name] = str(data.get("mjml") or data.get("html") or "")
        elif "." in f.name:
            head, tail = f.name.split(".", 1)
            inner = data.get(head)
            out[f.name] = str(inner.get(tail) or "") if isinstance(inner, Mapping) else ""
        else:
            value = data.get(f.name)
            out[f.name] = value if isinstance(value, str) else ""
    return out


def form_data(channel: str, form: Mapping[str, str], base: Mapping[str, Any]) -> dict[str, Any]:
    """The editor's fields as a template's ``data``, over ``base`` (what the editor does
    not show, such as cc or custom, stays as it was). An empty field is left out."""
    data: dict[str, Any] = {k: v for k, v in base.items()}
    for f in FIELDS[channel]:
        value = form.get(f.name, "")
        if f.name == "format":
            continue
        if channel == "email" and f.name == "body":
            data.pop("html", None)
            data.pop("mjml", None)
            if value.strip():
                data["mjml" if form.get("format") == "mjml" else "html"] = value
            continue
        if "." in f.name:
            head, tail = f.name.split(".", 1)
            inner = dict(data.get(head) or {}) if isinstance(data.get(head), Mapping) else {}
            if value.strip():
                inner[tail] = value.strip()
            else:
                inner.pop(tail, None)
            data[head] = inner
            continue
        if value.strip():
            data[f.name] = value
        else:
            data.pop(f.name, None)
    return data


def _mjml_where(message: str, source: str) -> str:
    """The MJML parser names an unknown tag without its place: find it in the source."""
    found = re.match(r"MJML: '([A-Za-z0-9:_-]+)'$", message)
    if found is None:
        return message
    tag = found.group(1)
    at = source.find("<" + tag)
    if at < 0:
        return message
    line = source.count("\n", 0, at) + 1
    column = at - (source.rfind("\n", 0, at) + 1) + 1
    return f"MJML: unknown or misplaced tag <{tag}> at line {line}, column {column}"


def field_errors(exc: TidingsError, data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A save's problems by editor field (``data.mjml`` and ``data.html`` are the body)."""
    out: dict[str, str] = {}
    mjml = (data or {}).get("mjml")
    for e in exc.errors or [FieldError(exc.param or "", exc.code, exc.message)]:
        if e.param == "data.mjml" and isinstance(mjml, str):
            e = FieldError(e.param, e.code, _mjml_where(e.message, mjml))
        name = e.param.removeprefix("data.")
        if name in ("html", "mjml") and name not in out:
            name = "body" if "body" not in out else name
        if name == "from":
            name = "from.address"
        out.setdefault(name or "form", e.message)
    return out


def _campaign_template(page: Page) -> tuple[CampaignStore, dict[str, Any], dict[str, Any] | None]:
    store = campaign_store(page)
    row = campaign_row(page, store)
    found = template_row(page, store, row) if "template_id" in page.request.path_params else None
    return store, row, found


def _locale(raw: str) -> tuple[str | None, str | None]:
    try:
        return wire_fields.normalise_locale(raw.strip()), None
    except ValueError as exc:
        return None, str(exc)


def editor(page: Page) -> Response:
    store, campaign, found = _campaign_template(page)
    channel = campaign["channel"]
    base = found["data"] if found else STARTERS[channel]
    values = form_values(channel, base)
    locale = found["locale"] if found else page.query("locale")
    errors: dict[str, str] = {}
    if page.request.method == "POST":
        page.require(Role.EDITOR)
        values = {f.name: page.form.get(f.name, "") for f in FIELDS[channel]}
        locale, problem = _locale(page.form.get("locale", ""))
        if problem:
            errors["locale"] = problem
        data = form_data(channel, page.form, base if found else {})
        if not errors:
            try:
                assert locale is not None
                if found is None:
                    saved = store.create_template(page.pid, campaign["id"], locale, data)
                else:
                    saved = store.update_template(page.pid, found["id"], locale=locale, data=data)
                url = f"/campaigns/{campaign['id']}/templates/{saved['id']}/edit"
                return page.redirect(page.url(url, done="saved"))
            except TidingsError as exc:
                errors = field_errors(exc, data)
    if page.request.method == "POST":
        locale = page.form.get("locale", "")
    note = {"saved": "Saved.", "proof": "Proof sent."}.get(page.query("done"))
    return _page(page, campaign, found, locale or "", values, errors=errors, note=note)


def _page(
    page: Page,
    campaign: dict[str, Any],
    found: dict[str, Any] | None,
    locale: str,
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    note: str | None = None,
    proof_error: str | None = None,
    recipient: str = "",
) -> Response:
    """The editor page; 400 when it shows a problem."""
    return page.render(
        "template_form.html",
        status=400 if errors or proof_error else 200,
        nav="campaigns",
        campaign=campaign,
        tpl=found,
        locale=locale,
        fields=FIELDS[campaign["channel"]],
        values=values,
        errors=errors or {},
        may_edit=page.may(Role.EDITOR),
        note=note,
        proof_error=proof_error,
        recipient=recipient,
    )


def _unsaved(page: Page) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    _, campaign, found = _campaign_template(page)
    data = form_data(campaign["channel"], page.form, found["data"] if found else {})
    return campaign, found, data


def preview(page: Page) -> Response:
    """What the form holds, rendered, for the editor's sandboxed frame."""
    campaign, found, data = _unsaved(page)
    try:
        compiled = prepare(campaign["channel"], data)
    except TidingsError as exc:
        problems = field_errors(exc, data)
        return preview_response(None, "; ".join(f"{k}: {v}" for k, v in problems.items()))
    context = {"campaign_id": campaign["id"], "template_id": found["id"] if found else None}
    message, error = render_message(page, campaign["channel"], data, compiled, context)
    return preview_response(message, error)


def check(page: Page) -> Response:
    """The form's problems by field, and the rendered subject/sender (JSON)."""
    campaign, found, data = _unsaved(page)
    errors: dict[str, str] = {}
    summary: dict[str, str] = {}
    try:
        compiled = prepare(campaign["channel"], data)
    except TidingsError as exc:
        errors = field_errors(exc, data)
    else:
        context = {"campaign_id": campaign["id"], "template_id": found["id"] if found else None}
        message, error = render_message(page, campaign["channel"], data, compiled, context)
        if error is not None:
            errors["form"] = error
        elif isinstance(message, EmailMessage):
            sender = (
                f"{message.from_name} <{message.from_address}>"
                if message.from_name
                else message.from_address
            )
            summary = {"subject": message.subject, "from": sender}
    return json_response({"errors": errors, "summary": summary})


def proof(page: Page) -> Response:
    """Send the saved template, rendered for a user with no traits, to one address."""
    store, campaign, found = _campaign_template(page)
    assert found is not None
    raw = page.form.get("recipient", "").strip()
    recipient: dict[str, Any] = {}
    problem: str | None = None
    try:
        if found["type"] == "email":
            recipient["email"] = wire_fields.normalise_email(raw)
        elif found["type"] == "text":
            recipient["phone"] = wire_fields.normalise_phone(raw)
        elif found["type"] == "push":
            recipient.update(push_token=raw, push_os="")
        else:
            problem = f"A {found['type']} template has no proof recipient."
    except ValueError as exc:
        problem = str(exc)
    if problem is None and not raw:
        problem = "Give an address to send the proof to."
    if problem is None:
        problem = _send_proof(page, store, campaign, found, recipient)
    if problem is None:
        url = f"/campaigns/{campaign['id']}/templates/{found['id']}/edit"
        return page.redirect(page.url(url, done="proof"))
    values = form_values(campaign["channel"], found["data"])
    return _page(page, campaign, found, found["locale"], values, proof_error=problem, recipient=raw)


def _send_proof(
    page: Page,
    store: CampaignStore,
    campaign: dict[str, Any],
    found: dict[str, Any],
    recipient: dict[str, Any],
) -> str | None:
    with store.reader.connect() as conn:
        chosen = CampaignStore.provider_for(
            conn, page.pid, campaign["channel"], campaign["provider_id"]
        )
    if chosen is None:
        return f"No {campaign['channel']} provider is set up for this campaign."
    context = {"campaign_id": campaign["id"], "template_id": found["id"]}
    message, error = render_message(
        page, found["type"], found["data"], found.get("compiled"), context, recipient
    )
    if error is not None:
        return f"The template could not be rendered: {error}"

    async def send() -> tuple[Outcome, str | None]:
        adapter = build_adapter(chosen["type"], chosen["data"])
        try:
            result = await adapter.send(message)
        finally:
            await adapter.aclose()
        return result.outcome, result.reason

    try:
        outcome, reason = anyio.from_thread.run(send)
    except TidingsError as exc:
        return exc.message
    if outcome is not Outcome.ACCEPTED:
        return f"The provider did not accept it ({outcome.value}): {reason or 'no reason given'}"
    return None


def template_edit_routes(admin: Admin) -> list[Route]:
    base = "/p/{pid}/campaigns/{campaign_id}"
    one = base + "/templates/{template_id}"
    both = ["GET", "POST"]
    return [
        route(base + "/templates/new", editor, admin, role=Role.EDITOR, methods=both),
        route(base + "/templates/preview", preview, admin, methods=["POST"]),
        route(base + "/templates/check", check, admin, methods=["POST"], json=True),
        route(one + "/edit", editor, admin, role=Role.SUPPORT, methods=both),
        route(one + "/preview", preview, admin, methods=["POST"]),
        route(one + "/check", check, admin, methods=["POST"], json=True),
        route(one + "/proof", proof, admin, role=Role.EDITOR, methods=["POST"]),
    ]
