"""A tracked email end to end: decorated, delivered by the smtp adapter to a real SMTP
server, then read as a mail client would: its pixel loaded, a link followed, and the
one-click unsubscribe of its List-Unsubscribe header posted (RFC 8058)."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from tests.api.test_tracking import FakeUnsubscribe
from tests.conftest import Project, bearer, drain, route_first
from tests.messaging.test_provider_smtp import Inbox
from tidings.api.app import TidingsApp
from tidings.api.tracking import tracking_router
from tidings.bootstrap import Services, tracker_for
from tidings.domain.channels import EmailMessage, Outcome
from tidings.domain.tracking import TrackingRef
from tidings.messaging.providers import build_adapter
from tidings.messaging.secrets import InstallationSecrets
from tidings.store.tables import events


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


async def test_a_tracked_mail_read_as_a_mail_client_would(
    app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    smtpd: tuple[Inbox, int],
) -> None:
    inbox, port = smtpd
    tracker = tracker_for(
        services.settings.model_copy(update={"public_url": "http://tidings.test"}),
        InstallationSecrets(services.db.writer, services.db.reader).get,
    )
    unsubscribe = FakeUnsubscribe()
    route_first(app, tracking_router(services, tracker, unsubscribe=unsubscribe))
    identified = await client.post(
        "/api/client/identify",
        json={"external_id": "ada", "email": "ada@example.com"},
        headers=bearer(project.pk),
    )
    assert identified.status_code == 204
    await drain(services)
    profile_id = services.profiles.profile_id_for(project.id, "external", "ada")
    assert profile_id is not None
    ref = TrackingRef(project.id, profile_id, 7, 555, 3, "email", journey_id=2, step_id=4)

    rendered = EmailMessage(
        to="ada@example.com",
        from_address="news@shop.example",
        subject="Winter sale",
        html='<html><body><p><a href="https://shop.example/sale?utm=mail&amp;x=1">Shop</a></p></body></html>',
        text="Shop: https://shop.example/sale",
    )
    adapter = build_adapter("smtp", {"host": "127.0.0.1", "port": port, "tls": "none"})
    result = await adapter.send(tracker.decorate_email(rendered, ref))
    await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED

    [envelope] = inbox.mail
    mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part = mail.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    [pixel] = re.findall(r'<img src="(http://tidings\.test/t/o/[^"]+)"', html)
    [link] = re.findall(r'<a href="(http://tidings\.test/t/c/[^"]+)"', html)

    opened = await client.get(pixel.removeprefix("http://tidings.test"))
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    followed = await client.get(link.replace("&amp;", "&").removeprefix("http://tidings.test"))
    assert followed.status_code == 302
    assert followed.headers["location"] == "https://shop.example/sale?utm=mail&x=1"

    one_click = mail["List-Unsubscribe"].strip("<>")
    posted = await client.post(
        one_click.removeprefix("http://tidings.test"),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200
    assert unsubscribe.calls == [(project.id, profile_id, 3, 7)]

    await drain(services)
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.name, events.c.external_id, events.c.data)
            .where(events.c.name.in_(["email_opened", "email_clicked"]))
            .order_by(events.c.name)
        ).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (
            "email_clicked",
            "ada",
            {
                "campaign_id": 7,
                "journey_id": 2,
                "step_id": 4,
                "url": "https://shop.example/sale?utm=mail&x=1",
            },
        ),
        ("email_opened", "ada", {"campaign_id": 7, "journey_id": 2, "step_id": 4}),
    ]
