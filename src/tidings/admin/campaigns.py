"""Campaign pages: the list with each campaign's state and delivery funnel, one campaign
with its templates, and a template's preview.

The preview is the rendered message (for a user with no traits) served by its own route
into an ``<iframe sandbox="">``: the frame has no scripts, no forms, a unique origin, and
its own CSP (inline styles and https/data images, nothing else), so a template's HTML can
neither run nor reach the admin.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.channels import EmailMessage
from tidings.domain.errors import NotFound, ValidationFailed
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.templates import RenderError, compile_template

__all__ = ["PREVIEW_POLICY", "campaigns_routes"]

PAGE_SIZE = 25
FUNNEL = ("total", "sent", "failed", "opens", "clicks", "bounced", "unsubscribed")
# The preview frame's own policy (it replaces the admin's for that response).
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


def _store(page: Page) -> CampaignStore:
    messaging = page.admin.services.messaging
    if messaging is None:
        raise Refusal(404, "No campaigns", "Messaging is not enabled on this server.")
    return messaging.campaigns


def _id(page: Page, name: str) -> int:
    raw = page.param(name)
    if not raw.isdigit() or len(raw) > 12:
        raise Refusal(404, "Not found", "There is no such page in the admin.")
    return int(raw)


def _campaign(page: Page, store: CampaignStore) -> dict[str, Any]:
    try:
        return store.campaign(page.pid, _id(page, "campaign_id"))
    except NotFound:
        raise Refusal(404, "No such campaign", "This project has no such campaign.") from None


def campaigns(page: Page) -> Response:
    store = _store(page)
    cursor = page.query("cursor") or None
    try:
        found = store.campaigns(page.pid, PAGE_SIZE, cursor)
    except ValidationFailed:
        found = store.campaigns(page.pid, PAGE_SIZE, None)
    rows = [(c, store.delivery(c["id"])) for c in found.results]
    return page.render(
        "campaigns.html",
        nav="campaigns",
        rows=rows,
        funnel=FUNNEL,
        next_url=page.url("/campaigns", cursor=found.next_cursor) if found.next_cursor else None,
        prev_url=page.url("/campaigns", cursor=found.prev_cursor) if found.prev_cursor else None,
    )


def campaign(page: Page) -> Response:
    store = _store(page)
    row = _campaign(page, store)
    templates = store.templates(page.pid, 100, None, campaign_id=row["id"]).results
    return page.render(
        "campaign.html",
        nav="campaigns",
        campaign=row,
        delivery=store.delivery(row["id"]),
        funnel=FUNNEL,
        templates=templates,
    )


def _template(page: Page, store: CampaignStore, row: dict[str, Any]) -> dict[str, Any]:
    try:
        template = store.template(page.pid, _id(page, "template_id"))
    except NotFound:
        template = None
    if template is None or template["campaign_id"] != row["id"]:
        raise Refusal(404, "No such template", "This campaign has no such template.")
    return template


def _render(page: Page, template: dict[str, Any]) -> tuple[Any, str | None]:
    project = page.project
    assert project is not None
    roots = {
        "user": {"data": {}, "id": None},
        "event": {},
        "journey": {},
        "project": {
            "id": project.id,
            "name": project.name,
            "locale": project.locale,
            "timezone": project.timezone,
        },
        "context": {"campaign_id": template["campaign_id"], "template_id": template["id"]},
    }
    recipient = {
        "email": "preview@example.invalid",
        "phone": "+10000000000",
        "push_token": "preview",
        "push_os": "ios",
    }
    try:
        compiled = compile_template(template["type"], template["data"], template.get("compiled"))
        return compiled.render(roots, recipient=recipient), None
    except RenderError as exc:
        return None, exc.reason


def template(page: Page) -> Response:
    store = _store(page)
    row = _campaign(page, store)
    found = _template(page, store, row)
    message, error = _render(page, found)
    shown: dict[str, str] = {}
    if message is not None and not isinstance(message, EmailMessage):
        for f in dataclasses.fields(message):
            value = getattr(message, f.name)
            if f.name not in {"to", "token"} and isinstance(value, str):
                shown[f.name] = value
    return page.render(
        "campaign_template.html",
        nav="campaigns",
        campaign=row,
        tpl=found,
        email=message if isinstance(message, EmailMessage) else None,
        fields=shown,
        error=error,
    )


def preview(page: Page) -> Response:
    """The rendered email HTML alone, for the sandboxed frame of the template page."""
    store = _store(page)
    row = _campaign(page, store)
    found = _template(page, store, row)
    message, error = _render(page, found)
    if isinstance(message, EmailMessage) and message.html is not None:
        body = message.html
    else:
        body = "<!doctype html><p>No HTML to preview.</p>"
    if error is not None:
        body = "<!doctype html><p>The template could not be rendered.</p>"
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": PREVIEW_POLICY,
            "x-frame-options": "SAMEORIGIN",
        },
    )


def campaigns_routes(admin: Admin) -> list[Route]:
    base = "/p/{pid}/campaigns/{campaign_id}"
    return [
        route("/p/{pid}/campaigns", campaigns, admin),
        route(base, campaign, admin),
        route(base + "/templates/{template_id}", template, admin),
        route(base + "/templates/{template_id}/preview", preview, admin),
    ]
