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

import markupsafe
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.auth import Role
from tidings.domain.channels import EmailMessage
from tidings.domain.errors import NotFound, ValidationFailed
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.templates import RenderError, compile_template

__all__ = [
    "ACTIONS",
    "PREVIEW_POLICY",
    "campaign_row",
    "campaign_store",
    "campaigns_routes",
    "preview_response",
    "render_message",
    "template_row",
]

PAGE_SIZE = 25
FUNNEL = ("total", "sent", "failed", "opens", "clicks", "bounced", "unsubscribed")
# A campaign's own page: every stage, each but the total with its share of the one before
# it that it is counted against (sends of the total; opens, clicks… of the sent).
DETAIL_FUNNEL = (
    ("total", None),
    ("pending", "total"),
    ("sent", "total"),
    ("failed", "total"),
    ("skipped", "total"),
    ("opens", "sent"),
    ("clicks", "sent"),
    ("bounced", "sent"),
    ("unsubscribed", "sent"),
)


# The preview frame's own policy (it replaces the admin's for that response).
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)

# The state buttons: what each asks for, its label, and the states it shows in.
ACTIONS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "scheduled": ("Schedule", {"blast": ("draft",)}),
    "running": ("Start", {"trigger": ("draft",)}),
    "draft": ("Back to draft", {"blast": ("scheduled",), "trigger": ("running",)}),
    "aborting": ("Abort", {"blast": ("scheduled", "loading", "running"), "trigger": ("running",)}),
}
_NOTES = {
    "created": "Campaign created: add a template for each locale.",
    "saved": "Saved.",
    "scheduled": "Scheduled: it loads its recipients at the time set.",
    "running": "Started: it sends to each user it is triggered for.",
    "draft": "Back to draft: nothing more is sent.",
    "aborting": "Aborting: pending sends are skipped.",
}


def shares(delivery: dict[str, int]) -> dict[str, str]:
    """Each stage's share of its base, as ``42.5%`` (none when the base is 0)."""
    out: dict[str, str] = {}
    for key, base in DETAIL_FUNNEL:
        if base is not None and delivery.get(base):
            out[key] = f"{100 * delivery.get(key, 0) / delivery[base]:.1f}% of {base}"
    return out


def actions_for(campaign: dict[str, Any]) -> list[tuple[str, str]]:
    """The state buttons a campaign shows: (state asked for, label)."""
    return [
        (state, label)
        for state, (label, where) in ACTIONS.items()
        if campaign["state"] in where.get(campaign["type"], ())
    ]


def campaign_store(page: Page) -> CampaignStore:
    messaging = page.admin.services.messaging
    if messaging is None:
        raise Refusal(404, "No campaigns", "Messaging is not enabled on this server.")
    return messaging.campaigns


def _id(page: Page, name: str) -> int:
    raw = page.param(name)
    if not raw.isdigit() or len(raw) > 12 or int(raw) >= 2**31:  # ids are 32-bit
        raise Refusal(404, "Not found", "There is no such page in the admin.")
    return int(raw)


def campaign_row(page: Page, store: CampaignStore) -> dict[str, Any]:
    try:
        return store.campaign(page.pid, _id(page, "campaign_id"))
    except NotFound:
        raise Refusal(404, "No such campaign", "This project has no such campaign.") from None


def campaigns(page: Page) -> Response:
    store = campaign_store(page)
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
        may_edit=page.may(Role.EDITOR),
    )


def campaign(page: Page) -> Response:
    store = campaign_store(page)
    row = campaign_row(page, store)
    delivery = store.delivery(row["id"])
    templates = store.templates(page.pid, 100, None, campaign_id=row["id"]).results
    return page.render(
        "campaign.html",
        nav="campaigns",
        campaign=row,
        delivery=delivery,
        funnel=[key for key, _ in DETAIL_FUNNEL],
        shares=shares(delivery),
        templates=templates,
        actions=actions_for(row) if page.may(Role.PUBLISHER) else [],
        may_edit=page.may(Role.EDITOR),
        note=_NOTES.get(page.query("done")),
    )


def template_row(page: Page, store: CampaignStore, row: dict[str, Any]) -> dict[str, Any]:
    try:
        template = store.template(page.pid, _id(page, "template_id"))
    except NotFound:
        template = None
    if template is None or template["campaign_id"] != row["id"]:
        raise Refusal(404, "No such template", "This campaign has no such template.")
    return template


PREVIEW_RECIPIENT = {
    "email": "preview@example.invalid",
    "phone": "+10000000000",
    "push_token": "preview",
    "push_os": "ios",
}


def render_message(
    page: Page,
    channel: str,
    data: dict[str, Any],
    compiled: dict[str, Any] | None,
    context: dict[str, Any],
    recipient: dict[str, Any] | None = None,
) -> tuple[Any, str | None]:
    """The message for a user with no traits (its fallbacks show), or why it fails."""
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
        "context": context,
    }
    try:
        template = compile_template(channel, data, compiled)
        return template.render(roots, recipient=recipient or PREVIEW_RECIPIENT), None
    except RenderError as exc:
        return None, exc.reason


def _render(page: Page, template: dict[str, Any]) -> tuple[Any, str | None]:
    context = {"campaign_id": template["campaign_id"], "template_id": template["id"]}
    return render_message(
        page, template["type"], template["data"], template.get("compiled"), context
    )


def message_fields(message: Any) -> dict[str, str]:
    """A message's text fields but its address (what a non-email preview shows)."""
    shown: dict[str, str] = {}
    if message is not None and not isinstance(message, EmailMessage):
        for f in dataclasses.fields(message):
            value = getattr(message, f.name)
            if f.name not in {"to", "token"} and isinstance(value, str):
                shown[f.name] = value
            elif f.name == "content" and isinstance(value, dict):
                shown.update({k: v for k, v in value.items() if isinstance(v, str)})
    return shown


def preview_response(message: Any, error: str | None) -> Response:
    """The frame's document: the email's HTML as it is (its own policy keeps it inert),
    or another message's fields as escaped text."""
    if error is not None:
        shown = markupsafe.escape(error)
        body = f"<!doctype html><p>The template could not be rendered.</p><pre>{shown}</pre>"
    elif isinstance(message, EmailMessage) and message.html is not None:
        body = message.html
    elif isinstance(message, EmailMessage) or message is None:
        body = "<!doctype html><p>No HTML to preview.</p>"
    else:
        rows = "".join(
            f"<dt>{markupsafe.escape(k)}</dt><dd><pre>{markupsafe.escape(v)}</pre></dd>"
            for k, v in message_fields(message).items()
        )
        body = f"<!doctype html><dl>{rows}</dl>"
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": PREVIEW_POLICY,
            "x-frame-options": "SAMEORIGIN",
        },
    )


def template(page: Page) -> Response:
    store = campaign_store(page)
    row = campaign_row(page, store)
    found = template_row(page, store, row)
    message, error = _render(page, found)
    shown = message_fields(message)
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
    store = campaign_store(page)
    row = campaign_row(page, store)
    message, error = _render(page, template_row(page, store, row))
    return preview_response(message, error)


def campaigns_routes(admin: Admin) -> list[Route]:
    base = "/p/{pid}/campaigns/{campaign_id}"
    return [
        route("/p/{pid}/campaigns", campaigns, admin),
        route(base, campaign, admin),
        route(base + "/templates/{template_id}", template, admin),
        route(base + "/templates/{template_id}/preview", preview, admin),
    ]
