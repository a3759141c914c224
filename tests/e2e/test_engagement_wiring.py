"""The engagement half wired together as ``bootstrap.build`` and ``api.app`` wire it: no
doubles but a real SMTP server (aiosmtpd) on 127.0.0.1. A journey queues into
messaging's outbox; the delivery worker renders, tracks and sends through a provider made
through the API; the tracking, unsubscribe, in-app and inbound SMS routes reach the real
stores; the campaign's counters and the user's timeline show it all.

Delivery rounds run by hand (``tests.messaging.helpers.deliver``) so that nothing here
depends on timing."""

from __future__ import annotations

import email
import email.policy
import html
import re
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.conftest import Project, bearer, drain, make_settings
from tests.messaging.helpers import API, deliver, manual, patch, post
from tests.messaging.test_provider_smtp import Inbox
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services
from tidings.messaging.inbound import twilio_signature
from tidings.settings import Settings

PUBLIC = "http://tidings.test"  # the public URL links start with; the ASGI client's base
SALE = "https://shop.example/sale?utm=mail&x=1"
WELCOME = {
    "from": {"name": "Shop", "address": "shop@example.com"},
    "subject": "Welcome {{ user.first_name }}",
    "html": (
        '<html><body><p>Hi {{ user.first_name }}, <a href="https://shop.example/sale'
        '?utm=mail&amp;x=1">shop now</a></p></body></html>'
    ),
}
TOKEN = "twilio-auth-token"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url, public_url=PUBLIC)


@pytest.fixture
def smtpd() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def proxied(app: TidingsApp) -> AsyncIterator[httpx.AsyncClient]:
    """The app as reached behind a proxy: at an address other than its public URL."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as c:
        yield c


async def _get(client: httpx.AsyncClient, project: Project, path: str, **params: Any) -> Any:
    response = await client.get(API + path, params=params, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return response.json()


async def _identify(
    client: httpx.AsyncClient, services: Services, project: Project, **user: Any
) -> None:
    response = await client.post(f"{API}/identify", json=user, headers=bearer(project.pk))
    assert response.status_code == 204, response.text
    await drain(services)


async def _campaign(
    client: httpx.AsyncClient, project: Project, channel: str, template: dict[str, Any]
) -> dict[str, Any]:
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": channel, "channel": channel}
    )
    await post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": "en", "data": template},
    )
    running: dict[str, Any] = await patch(
        client, project, f"/campaigns/{campaign['id']}", {"state": "running"}
    )
    return running


async def _journey(client: httpx.AsyncClient, project: Project, campaign_id: int) -> int:
    graph = {
        "entry": {
            "type": "entrance",
            "data": {"trigger": "event", "event_name": "Signed up"},
            "children": [{"external_id": "welcome"}],
        },
        "welcome": {
            "type": "action",
            "data": {"campaign_id": campaign_id},
            "children": [{"external_id": "done"}],
        },
        "done": {"type": "exit", "data": {}},
    }
    journey = await post(client, project, "/journeys", {"name": "Welcome"})
    response = await client.put(
        f"{API}/journeys/{journey['id']}/steps", json=graph, headers=bearer(project.sk)
    )
    assert response.status_code == 200, response.text
    await patch(client, project, f"/journeys/{journey['id']}", {"status": "live"})
    return int(journey["id"])


def _parse(raw: bytes | None) -> EmailMessage:
    assert raw is not None
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _path(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return url.removeprefix(PUBLIC)


async def _timeline(
    client: httpx.AsyncClient, project: Project, external_id: str
) -> list[dict[str, Any]]:
    page = await _get(client, project, f"/users/{external_id}/events", limit=100)
    results: list[dict[str, Any]] = page["results"]
    return results


async def test_journey_mail_is_tracked_counted_and_unsubscribed(
    services: Services, client: httpx.AsyncClient, project: Project, smtpd: tuple[Inbox, int]
) -> None:
    manual(services)
    inbox, port = smtpd
    provider = await post(
        client,
        project,
        "/providers",
        {
            "type": "smtp",
            "name": "Local SMTP",
            "group": "email",
            "is_default": True,
            "data": {"host": "127.0.0.1", "port": port, "tls": "none"},
        },
    )
    assert provider["type"] == "smtp"
    campaign = await _campaign(client, project, "email", WELCOME)
    journey_id = await _journey(client, project, campaign["id"])
    await _identify(
        client,
        services,
        project,
        external_id="ada",
        email="ada@example.com",
        data={"first_name": "Ada"},
    )

    events = [{"name": "Signed up", "external_id": "ada", "data": {"plan": "pro"}}]
    sent = await client.post(f"{API}/events", json=events, headers=bearer(project.pk))
    assert sent.status_code in (200, 202, 204), sent.text
    await drain(services)  # the journey's action step queues in the event's batch
    assert await deliver(services) == 1
    assert await deliver(services) == 0  # the journey sends once
    [envelope] = inbox.mail
    assert envelope.rcpt_tos == ["ada@example.com"]
    mail = _parse(envelope.original_content)
    assert mail["Subject"] == "Welcome Ada"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click = mail["List-Unsubscribe"]
    assert one_click.startswith(f"<{PUBLIC}/unsubscribe/") and one_click.endswith(">")
    part = mail.get_body(("html",))
    assert part is not None
    body = part.get_content()
    links = [html.unescape(h) for h in re.findall(r'<a href="([^"]+)"', body)]
    assert len(links) == 1 and links[0].startswith(f"{PUBLIC}/t/c/")  # no untracked link
    [pixel] = re.findall(r'<img src="([^"]+)" width="1" height="1"', body)
    assert html.unescape(pixel).startswith(f"{PUBLIC}/t/o/")

    # Read as a mail client would: the link followed, the pixel loaded.
    followed = await client.get(_path(links[0]))
    assert followed.status_code == 302
    assert followed.headers["location"] == SALE
    opened = await client.get(_path(html.unescape(pixel)))
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    await drain(services)

    got = await _get(client, project, f"/campaigns/{campaign['id']}")
    assert got["delivery"]["sent"] == 1
    assert got["delivery"]["opens"] == 1 and got["delivery"]["clicks"] == 1
    timeline = await _timeline(client, project, "ada")
    by_name = {e["name"]: e for e in timeline}
    assert {"Signed up", "email_sent", "email_opened", "email_clicked"} <= set(by_name)
    for name in ("email_sent", "email_opened", "email_clicked"):
        assert by_name[name]["data"]["campaign_id"] == campaign["id"], by_name[name]
    assert by_name["email_sent"]["data"]["journey_id"] == journey_id
    assert isinstance(by_name["email_sent"]["data"]["step_id"], int)

    steps = await _get(client, project, f"/journeys/{journey_id}/steps")
    assert by_name["email_sent"]["data"]["step_id"] == steps["welcome"]["id"]
    for name in ("email_opened", "email_clicked"):
        assert by_name[name]["data"]["journey_id"] == journey_id, by_name[name]

    # A mail scanner following the link (GET) does not unsubscribe; the one-click POST
    # (RFC 8058) from the header does, and once only however often it comes.
    confirm = await client.get(_path(one_click[1:-1]))
    assert confirm.status_code == 200
    states = await _get(client, project, "/users/ada/subscriptions")
    assert {s["subscription_id"]: s["state"] for s in states["results"]}[
        campaign["subscription_id"]
    ] != 0
    posted = await client.post(
        _path(one_click[1:-1]),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200, posted.text
    again = await client.post(
        _path(one_click[1:-1]),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200, again.text
    await drain(services)
    states = await _get(client, project, "/users/ada/subscriptions")
    by_type = {s["subscription_id"]: s["state"] for s in states["results"]}
    assert by_type[campaign["subscription_id"]] == 0
    got = await _get(client, project, f"/campaigns/{campaign['id']}")
    assert got["delivery"]["unsubscribed"] == 1

    # Triggered again for her: skipped, never mailed.
    await post(
        client, project, f"/campaigns/{campaign['id']}/trigger", {"user": {"external_id": "ada"}}
    )
    await deliver(services)
    assert len(inbox.mail) == 1
    listed = await _get(client, project, f"/campaigns/{campaign['id']}/sends")
    outcomes = sorted((s["state"], s.get("reason")) for s in listed["results"])
    assert outcomes == [("sent", None), ("skipped", "unsubscribed")], listed


async def test_in_app_campaign_reaches_the_sdk_notifications_route(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    template = {"type": "banner", "title": "Hi {{ user.first_name }}", "body": "20% off"}
    campaign = await _campaign(client, project, "in_app", template)
    await _identify(client, services, project, external_id="ada", data={"first_name": "Ada"})
    await post(
        client, project, f"/campaigns/{campaign['id']}/trigger", {"user": {"external_id": "ada"}}
    )
    await deliver(services)
    listed = await _get(client, project, f"/campaigns/{campaign['id']}/sends")
    assert [s["state"] for s in listed["results"]] == ["sent"], listed

    sdk = bearer(project.pk, **{"x-external-id": "ada"})
    page = await client.get(f"{API}/notifications", headers=sdk)
    assert page.status_code == 200, page.text
    [note] = page.json()["results"]
    assert note["content"]["title"] == "Hi Ada" and note["content"]["body"] == "20% off"
    assert note["read_at"] is None
    # Not someone else's.
    other = await client.get(
        f"{API}/notifications", headers=bearer(project.pk, **{"x-external-id": "bob"})
    )
    assert other.status_code == 200 and other.json()["results"] == []

    read = await client.put(f"{API}/notifications/{note['id']}", headers=sdk)
    assert read.status_code in (200, 204), read.text
    again = await client.get(f"{API}/notifications", headers=sdk)
    assert again.status_code == 200 and again.json()["results"] == []


async def test_signed_sms_stop_unsubscribes_the_phone_from_text_types(
    services: Services,
    client: httpx.AsyncClient,
    project: Project,
    proxied: httpx.AsyncClient,
) -> None:
    """Twilio signs the public URL it was given; behind a proxy the request arrives at
    another address, so only ``TIDINGS_PUBLIC_URL`` (wired into the router) checks out."""
    manual(services)
    provider = await post(
        client,
        project,
        "/providers",
        {
            "type": "twilio",
            "name": "Twilio",
            "group": "text",
            "is_default": True,
            "data": {"account_sid": "AC1", "auth_token": TOKEN, "from": "+61400000000"},
        },
    )
    assert TOKEN not in str(provider)  # a secret is not shown back
    weekly = await post(client, project, "/subscriptions", {"name": "SMS deals", "channel": "text"})
    await _identify(client, services, project, external_id="ada", phone="+61400000009")
    await _identify(client, services, project, external_id="bob", phone="+61400000008")
    before = await _get(client, project, "/users/ada/subscriptions")
    text_types = {s["subscription_id"] for s in before["results"] if s["channel"] == "text"}
    assert weekly["id"] in text_types and len(text_types) == 2
    assert all(s["state"] != 0 for s in before["results"])

    path = f"/api/inbound/sms/{provider['id']}"
    fields = {"MessageSid": "SM1", "From": "+61400000009", "To": "+61400000000", "Body": "STOP"}
    unsigned = await proxied.post(
        path,
        content=urlencode(fields).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature("wrong", PUBLIC + path, list(fields.items())),
        },
    )
    assert unsigned.status_code == 401, unsigned.text
    signature = twilio_signature(TOKEN, PUBLIC + path, list(fields.items()))
    response = await proxied.post(
        path,
        content=urlencode(fields).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert "<Message>" in response.text
    await drain(services)

    after = await _get(client, project, "/users/ada/subscriptions")
    for s in after["results"]:
        if s["channel"] == "text":
            assert s["state"] == 0, s
        else:
            assert s["state"] != 0, s  # other channels untouched
    bob = await _get(client, project, "/users/bob/subscriptions")
    assert all(s["state"] != 0 for s in bob["results"])  # another phone: untouched
