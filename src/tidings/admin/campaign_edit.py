"""Making and changing campaigns in the admin: the form (channel, provider, subscription
type, lists and exclusions for blasts, schedule, tags) and the state buttons (schedule,
start, back to draft, abort).

The form calls ``CampaignStore`` as the API does (``create_campaign``/``update_campaign``),
so the same rules hold: a campaign starts as a draft, only a draft's channel, lists and
subscription change, a scheduled blast needs lists and a time, and each problem the store
finds is shown at its field. Editing needs the editor role; a state change the publisher
role (as ``PATCH /campaigns/{id}`` with ``state``).
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.campaigns import ACTIONS, campaign_row, campaign_store
from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.auth import Role
from tidings.domain.errors import TidingsError
from tidings.domain.messaging import CHANNELS
from tidings.messaging.campaigns import CampaignStore

__all__ = ["campaign_edit_routes"]

MAX_LISTS = 200  # lists offered in the form: the newest


def _local(micros: int | None, timezone: str) -> str:
    if micros is None:
        return ""
    moment = datetime.fromtimestamp(micros / 1_000_000, tz=ZoneInfo(timezone))
    return moment.strftime("%Y-%m-%dT%H:%M")


def _zone(page: Page) -> str:
    zone = (page.project.timezone if page.project else None) or "UTC"
    try:
        ZoneInfo(zone)
    except (ValueError, KeyError):
        return "UTC"
    return zone


def _ids(page: Page, name: str) -> list[int]:
    """A multiple select's values (the form dict keeps one value a name)."""
    try:
        values = urllib.parse.parse_qs(page.body.decode()).get(name, [])
    except UnicodeDecodeError:
        return []
    return list(dict.fromkeys(int(v) for v in values if v.isdigit() and len(v) <= 10))


def _choices(page: Page, store: CampaignStore) -> dict[str, Any]:
    messaging = page.admin.services.messaging
    assert messaging is not None
    return {
        "providers": store.providers(page.pid, 100, None).results,
        "subscriptions": messaging.subscriptions.types(page.pid),
        "lists": page.admin.lists.page(page.pid, limit=MAX_LISTS).results,
        "channels": CHANNELS,
    }


def _values(page: Page, current: dict[str, Any] | None) -> dict[str, Any]:
    """The form's values: from the request (POST) or the campaign (GET)."""
    zone = _zone(page)
    if page.request.method != "POST":
        c = current or {}
        return {
            "name": c.get("name", ""),
            "type": c.get("type", "blast"),
            "channel": c.get("channel", "email"),
            "subscription_id": str(c.get("subscription_id") or ""),
            "provider_id": str(c.get("provider_id") or ""),
            "list_ids": list(c.get("list_ids") or []),
            "exclusion_list_ids": list(c.get("exclusion_list_ids") or []),
            "send_at": _local(c.get("send_at"), zone),
            "send_in_user_timezone": bool(c.get("send_in_user_timezone")),
            "tags": ", ".join(c.get("tags") or []),
        }
    form = page.form
    return {
        "name": form.get("name", ""),
        "type": form.get("type", (current or {}).get("type", "blast")),
        "channel": form.get("channel", (current or {}).get("channel", "email")),
        "subscription_id": form.get("subscription_id", ""),
        "provider_id": form.get("provider_id", ""),
        "list_ids": _ids(page, "list_ids"),
        "exclusion_list_ids": _ids(page, "exclusion_list_ids"),
        "send_at": form.get("send_at", ""),
        "send_in_user_timezone": form.get("send_in_user_timezone") == "on",
        "tags": form.get("tags", ""),
    }


def _checked(
    page: Page, v: dict[str, Any], errors: dict[str, str], creating: bool
) -> dict[str, Any]:
    """What to store, as the API's fields; problems go to ``errors`` by field."""
    out: dict[str, Any] = {}
    name = v["name"].strip()
    if not name or len(name) > 255:
        errors["name"] = "A campaign needs a name of 1 to 255 characters."
    out["name"] = name
    if creating:
        if v["type"] not in ("blast", "trigger"):
            errors["type"] = "Choose blast or trigger."
        out["type"] = v["type"]
    if v["channel"] not in CHANNELS:
        errors["channel"] = f"One of {', '.join(CHANNELS)}."
    out["channel"] = v["channel"]
    for key in ("subscription_id", "provider_id"):
        raw = v[key].strip()
        if raw and not (raw.isdigit() and len(raw) <= 10):
            errors[key] = "Choose one of the list."
        out[key] = int(raw) if raw.isdigit() and len(raw) <= 10 else None
    if out["subscription_id"] is None and "channel" not in errors:
        messaging = page.admin.services.messaging
        assert messaging is not None
        out["subscription_id"] = messaging.subscriptions.default_for(page.pid, v["channel"]).id
    out["list_ids"] = v["list_ids"]
    out["exclusion_list_ids"] = v["exclusion_list_ids"]
    out["send_at"] = None
    if v["send_at"].strip():
        try:
            moment = datetime.strptime(v["send_at"].strip(), "%Y-%m-%dT%H:%M")
            aware = moment.replace(tzinfo=ZoneInfo(_zone(page)))
            out["send_at"] = int(aware.timestamp() * 1_000_000)
        except ValueError:
            errors["send_at"] = "A date and time (YYYY-MM-DDTHH:MM)."
    out["send_in_user_timezone"] = v["send_in_user_timezone"]
    tags = list(dict.fromkeys(t.strip() for t in v["tags"].split(",") if t.strip()))
    if len(tags) > 50 or any(len(t) > 64 for t in tags):
        errors["tags"] = "Up to 50 tags of at most 64 characters each."
    out["tags"] = tags
    return out


def _form(page: Page, store: CampaignStore, current: dict[str, Any] | None) -> Response:
    values = _values(page, current)
    errors: dict[str, str] = {}
    if page.request.method == "POST":
        fields = _checked(page, values, errors, creating=current is None)
        if current is not None:
            if current["state"] != "draft" and not (
                current["type"] == "trigger" and current["state"] == "running"
            ):
                # Not a draft: only its name, provider, time and tags change (as the API).
                for key in ("channel", "list_ids", "exclusion_list_ids", "subscription_id"):
                    fields.pop(key, None)
            else:
                for key, old in (
                    ("list_ids", "list_ids"),
                    ("exclusion_list_ids", "exclusion_list_ids"),
                ):
                    if fields[key] == current[old]:
                        fields.pop(key)
                if fields["channel"] == current["channel"]:
                    fields.pop("channel")
        if not errors:
            try:
                if current is None:
                    row = store.create_campaign(page.pid, fields)
                    return page.redirect(page.url(f"/campaigns/{row['id']}", done="created"))
                store.update_campaign(page.pid, current["id"], fields)
                return page.redirect(page.url(f"/campaigns/{current['id']}", done="saved"))
            except TidingsError as exc:
                key = (exc.param or "").split(".", 1)[0].split("[", 1)[0]
                errors[key if key in values else "form"] = exc.message
    return page.render(
        "campaign_form.html",
        status=400 if errors else 200,
        nav="campaigns",
        campaign=current,
        values=values,
        errors=errors,
        timezone_name=_zone(page),
        **_choices(page, store),
    )


def create(page: Page) -> Response:
    return _form(page, campaign_store(page), None)


def edit(page: Page) -> Response:
    store = campaign_store(page)
    return _form(page, store, campaign_row(page, store))


def change_state(page: Page) -> Response:
    store = campaign_store(page)
    current = campaign_row(page, store)
    wanted = page.form.get("state", "")
    if wanted not in ACTIONS:
        raise Refusal(400, "Bad request", "No such state change.")
    try:
        store.update_campaign(page.pid, current["id"], {"state": wanted})
    except TidingsError as exc:
        raise Refusal(409, "Not changed", exc.message) from None
    return page.redirect(page.url(f"/campaigns/{current['id']}", done=wanted))


def campaign_edit_routes(admin: Admin) -> list[Route]:
    both = ["GET", "POST"]
    base = "/p/{pid}/campaigns/{campaign_id}"
    return [
        route("/p/{pid}/campaigns/new", create, admin, role=Role.EDITOR, methods=both),
        route(base + "/edit", edit, admin, role=Role.EDITOR, methods=both),
        route(base + "/state", change_state, admin, role=Role.PUBLISHER, methods=["POST"]),
    ]
