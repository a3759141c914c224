"""A project's channel settings: its providers (secrets write-only) and subscription types.

The same rules as the API (api/providers.py, api/subscriptions.py), over the same stores:
a provider's type must serve its channel, and its settings must build an adapter; a secret
is never rendered back (the mask ``********`` stands for it, and sending the mask back
keeps the stored value). Writes need the admin role.
"""

from __future__ import annotations

import json
from typing import Any

import anyio.from_thread
from starlette.responses import Response
from starlette.routing import Route

from tidings.admin.web import Admin, Page, Refusal, route
from tidings.domain.auth import Role
from tidings.domain.errors import Conflict, InvalidRequest, NotFound
from tidings.domain.messaging import CHANNELS, PROVIDER_GROUPS, RATE_INTERVALS
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.provider_rows import merge_provider_data, present_provider_data
from tidings.messaging.providers import PROVIDER_TYPES, build_adapter, channel_of
from tidings.messaging.subscriptions import SubscriptionStore

__all__ = ["channel_routes"]

_MAX_RATE = 10_000_000
_NOTES = {
    "created": "Provider added.",
    "saved": "Provider saved.",
    "removed": "Provider removed.",
    "type-created": "Subscription type added.",
    "type-saved": "Subscription type saved.",
}


def _messaging(page: Page) -> tuple[CampaignStore, SubscriptionStore]:
    messaging = page.admin.services.messaging
    if messaging is None:
        raise Refusal(404, "No messaging", "Messaging is not enabled on this server.")
    return messaging.campaigns, messaging.subscriptions


def _id(page: Page, name: str, what: str) -> int:
    raw = page.param(name)
    if not raw.isdigit() or len(raw) > 12:
        raise Refusal(404, f"No such {what}", f"This project has no such {what}.")
    return int(raw)


def _masked(data: Any) -> str:
    return json.dumps(present_provider_data(data), indent=2, sort_keys=True)


# -- providers ----------------------------------------------------------------------------------


def providers(page: Page, refusal: str | None = None) -> Response:
    store, _ = _messaging(page)
    listed = store.providers(page.pid, 100, page.query("cursor") or None)
    return page.render(
        "providers.html",
        status=409 if refusal else 200,
        nav="providers",
        rows=listed.results,
        next_url=page.url("/providers", cursor=listed.next_cursor),
        more=listed.next_cursor is not None,
        note=_NOTES.get(page.query("done")),
        refusal=refusal,
    )


def remove_provider(page: Page) -> Response:
    """Removes a provider no live campaign sends through (the API's rule: 409 otherwise,
    shown on the list)."""
    store, _ = _messaging(page)
    try:
        store.delete_provider(page.pid, _id(page, "provider_id", "provider"))
    except NotFound:
        raise Refusal(404, "No such provider", "This project has no such provider.") from None
    except Conflict as exc:
        return providers(page, refusal=f"{exc.message} Abort or finish it first.")
    return page.redirect(page.url("/providers", done="removed"))


def _provider_values(page: Page) -> dict[str, str]:
    keys = ("type", "name", "group", "rate_limit", "rate_interval", "data")
    values = {k: page.form.get(k, "").strip() for k in keys}
    values["is_default"] = "1" if page.form.get("is_default") else ""
    return values


def _check_provider(
    values: dict[str, str], current: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The row's fields from the form, checked as the API checks them; or the errors."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    kind, name, group = values["type"], values["name"], values["group"]
    if kind not in PROVIDER_TYPES:
        errors["type"] = f"Choose one of {', '.join(PROVIDER_TYPES)}."
    if not name:
        errors["name"] = "A provider needs a name."
    elif len(name) > 255:
        errors["name"] = "At most 255 characters."
    if group not in PROVIDER_GROUPS:
        errors["group"] = f"Choose one of {', '.join(PROVIDER_GROUPS)}."
    elif "type" not in errors:
        serves = channel_of(kind)
        if serves is not None and serves != group:
            errors["group"] = f"A {kind} provider sends {serves}, not {group}."
    rate = values["rate_limit"] or "0"
    if not rate.isdigit() or int(rate) > _MAX_RATE:
        errors["rate_limit"] = f"A whole number from 0 (no limit) to {_MAX_RATE:,}."
    if values["rate_interval"] not in RATE_INTERVALS:
        errors["rate_interval"] = f"Choose one of {', '.join(RATE_INTERVALS)}."
    data: Any = {}
    if values["data"]:
        try:
            data = json.loads(values["data"])
        except ValueError as exc:
            errors["data"] = f"The settings are not valid JSON: {exc}."
        else:
            if not isinstance(data, dict):
                errors["data"] = "The settings must be a JSON object, e.g. {}."
    if not errors:
        if current is not None:
            data = merge_provider_data(current["data"], data)
        try:
            adapter = build_adapter(kind, data)
        except ModuleNotFoundError:
            errors["type"] = f"Provider type '{kind}' is not available in this build."
        except InvalidRequest as exc:
            errors["data"] = exc.message
        except (ValueError, KeyError, TypeError) as exc:
            errors["data"] = f"The provider's settings are not valid: {exc}"
        else:
            anyio.from_thread.run(adapter.aclose)
    if errors:
        return {}, errors
    out.update(
        type=kind,
        name=name,
        channel=group,
        is_default=bool(values["is_default"]),
        rate_limit=int(rate),
        rate_interval=values["rate_interval"],
        data=data,
    )
    return out, errors


def _shown_data(values: dict[str, str], fallback: str) -> str:
    """The settings as typed, with every secret masked; invalid JSON is not echoed, as it
    may hold a secret."""
    try:
        data = json.loads(values["data"] or "{}")
    except ValueError:
        return fallback
    return _masked(data) if isinstance(data, dict) else fallback


def provider_form(page: Page) -> Response:
    store, _ = _messaging(page)
    current: dict[str, Any] | None = None
    if "provider_id" in page.request.path_params:
        try:
            current = store.provider(page.pid, _id(page, "provider_id", "provider"))
        except NotFound:
            raise Refusal(404, "No such provider", "This project has no such provider.") from None
    if current is not None:
        values = {
            "type": current["type"],
            "name": current["name"],
            "group": current["channel"],
            "rate_limit": str(current["rate_limit"]),
            "rate_interval": current["rate_interval"],
            "is_default": "1" if current["is_default"] else "",
            "data": _masked(current["data"]),
        }
    else:
        values = {
            "type": "smtp",
            "name": "",
            "group": "email",
            "rate_limit": "0",
            "rate_interval": "second",
            "is_default": "",
            "data": "{}",
        }
    errors: dict[str, str] = {}
    if page.request.method == "POST":
        page.require(Role.ADMIN)
        fallback = values["data"]
        values = _provider_values(page)
        row, errors = _check_provider(values, current)
        if not errors:
            if current is None:
                store.create_provider(page.pid, row)
                return page.redirect(page.url("/providers", done="created"))
            store.update_provider(page.pid, current["id"], row)
            return page.redirect(page.url("/providers", done="saved"))
        values["data"] = _shown_data(values, fallback)
    return page.render(
        "provider_form.html",
        status=400 if errors else 200,
        nav="providers",
        current=current,
        values=values,
        errors=errors,
        types=list(PROVIDER_TYPES),
        groups=list(PROVIDER_GROUPS),
        intervals=list(RATE_INTERVALS),
    )


# -- subscription types -------------------------------------------------------------------------


def _type_form(page: Page) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """A type form's values as typed, its checked fields (name and flags), and errors."""
    page.require(Role.ADMIN)
    values = {
        "name": page.form.get("name", ""),
        "channel": page.form.get("channel", ""),
        "is_public": "1" if page.form.get("is_public") else "",
        "requires_opt_in": "1" if page.form.get("requires_opt_in") else "",
    }
    errors: dict[str, str] = {}
    name = values["name"].strip()
    if not name:
        errors["name"] = "A subscription type needs a name."
    elif len(name) > 255:
        errors["name"] = "At most 255 characters."
    fields = {
        "name": name,
        "is_public": bool(values["is_public"]),
        "requires_opt_in": bool(values["requires_opt_in"]),
    }
    return values, fields, errors


def subscriptions(page: Page) -> Response:
    _, store = _messaging(page)
    values = {"name": "", "channel": "email", "is_public": "1", "requires_opt_in": ""}
    errors: dict[str, str] = {}
    if page.request.method == "POST":
        values, fields, errors = _type_form(page)
        if values["channel"] not in CHANNELS:
            errors["channel"] = f"Choose one of {', '.join(CHANNELS)}."
        if not errors:
            store.create_type(page.pid, channel=values["channel"], **fields)
            return page.redirect(page.url("/subscriptions", done="type-created"))
    return page.render(
        "subscriptions.html",
        status=400 if errors else 200,
        nav="subscriptions",
        rows=store.types(page.pid),
        values=values,
        errors=errors,
        channels=list(CHANNELS),
        note=_NOTES.get(page.query("done")),
        may_edit=page.may(Role.ADMIN),
    )


def subscription_form(page: Page) -> Response:
    _, store = _messaging(page)
    try:
        current = store.get_type(page.pid, _id(page, "sub_id", "subscription type"))
    except NotFound:
        raise Refusal(
            404, "No such subscription type", "This project has no such subscription type."
        ) from None
    values = {
        "name": current.name,
        "is_public": "1" if current.is_public else "",
        "requires_opt_in": "1" if current.requires_opt_in else "",
    }
    errors: dict[str, str] = {}
    if page.request.method == "POST":
        values, fields, errors = _type_form(page)
        if not errors:
            store.update_type(page.pid, current.id, **fields)
            return page.redirect(page.url("/subscriptions", done="type-saved"))
    return page.render(
        "subscription_form.html",
        status=400 if errors else 200,
        nav="subscriptions",
        current=current,
        values=values,
        errors=errors,
    )


def channel_routes(admin: Admin) -> list[Route]:
    both = ["GET", "POST"]
    return [
        route("/p/{pid}/providers", providers, admin, role=Role.ADMIN),
        route("/p/{pid}/providers/new", provider_form, admin, role=Role.ADMIN, methods=both),
        route(
            "/p/{pid}/providers/{provider_id}", provider_form, admin, role=Role.ADMIN, methods=both
        ),
        route(
            "/p/{pid}/providers/{provider_id}/remove",
            remove_provider,
            admin,
            role=Role.ADMIN,
            methods=["POST"],
        ),
        route("/p/{pid}/subscriptions", subscriptions, admin, methods=both),
        route(
            "/p/{pid}/subscriptions/{sub_id}",
            subscription_form,
            admin,
            role=Role.ADMIN,
            methods=both,
        ),
    ]
