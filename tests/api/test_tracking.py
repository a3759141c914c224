"""The public tracking routes: open pixel, click redirect, unsubscribe page and one-click."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from tests.conftest import Project, bearer, drain, route_first
from tidings.api.app import TidingsApp
from tidings.api.tracking import PIXEL, tracking_router
from tidings.bootstrap import Services, tracker_for
from tidings.domain.channels import EmailMessage
from tidings.domain.errors import NotFound
from tidings.domain.tracking import TrackingRef
from tidings.messaging.secrets import InstallationSecrets
from tidings.messaging.tracking import TokenTracker
from tidings.store.tables import events


class FakeUnsubscribe:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int | None, int | None]] = []
        self.fail = False

    def __call__(
        self, project_id: int, profile_id: str, subscription_id: int | None, campaign_id: int | None
    ) -> None:
        if self.fail:
            raise NotFound("That subscription no longer exists.")
        self.calls.append((project_id, profile_id, subscription_id, campaign_id))


@pytest.fixture
def unsubscribe() -> FakeUnsubscribe:
    return FakeUnsubscribe()


@pytest.fixture
def tracker(services: Services) -> TokenTracker:
    return tracker_for(
        services.settings, InstallationSecrets(services.db.writer, services.db.reader).get
    )


@pytest.fixture
def tracked_app(
    app: TidingsApp, services: Services, tracker: TokenTracker, unsubscribe: FakeUnsubscribe
) -> TidingsApp:
    route_first(app, tracking_router(services, tracker, unsubscribe=unsubscribe))
    return app


async def _profile(
    client: httpx.AsyncClient, services: Services, project: Project, external_id: str
) -> str:
    response = await client.post(
        "/api/client/identify", json={"external_id": external_id}, headers=bearer(project.pk)
    )
    assert response.status_code == 204, response.text
    await drain(services)
    profile_id = services.profiles.profile_id_for(project.id, "external", external_id)
    assert profile_id is not None
    return profile_id


def _events(services: Services, name: str) -> list[dict[str, Any]]:
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.external_id, events.c.data, events.c.message_id)
            .where(events.c.name == name)
            .order_by(events.c.created_at)
        ).all()
    return [{"external_id": r[0], "data": r[1], "message_id": r[2]} for r in rows]


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


async def test_clicks_redirect_to_the_signed_url_and_count_once_per_link(
    tracked_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    tracker: TokenTracker,
) -> None:
    profile_id = await _profile(client, services, project, "ada")
    ref = TrackingRef(project.id, profile_id, 7, 101, 3, "email", journey_id=5, step_id=9)
    decorated = tracker.decorate_email(
        EmailMessage(
            to="ada@example.com",
            from_address="n@shop.example",
            subject="s",
            html='<a href="https://shop.example/sale?a=1&amp;b=2">a</a> <a href="https://shop.example/b">b</a>',
        ),
        ref,
    )
    assert decorated.html is not None
    first, second = (html.unescape(h) for h in re.findall(r'href="([^"]*)"', decorated.html))
    for _ in range(2):
        response = await client.get(_path(first))
        assert response.status_code == 302
        assert response.headers["location"] == "https://shop.example/sale?a=1&b=2"
        assert response.headers["referrer-policy"] == "no-referrer"
    response = await client.get(_path(second))
    assert response.headers["location"] == "https://shop.example/b"
    await drain(services)
    # The clicks count as the send's one open (its images were never loaded).
    assert [e["message_id"] for e in _events(services, "email_opened")] == ["email_opened:101"]
    clicked = _events(services, "email_clicked")
    assert [(e["external_id"], e["data"]) for e in clicked] == [
        (
            "ada",
            {
                "campaign_id": 7,
                "journey_id": 5,
                "step_id": 9,
                "url": "https://shop.example/sale?a=1&b=2",
            },
        ),
        ("ada", {"campaign_id": 7, "journey_id": 5, "step_id": 9, "url": "https://shop.example/b"}),
    ]


async def test_the_open_pixel_counts_the_first_open(
    tracked_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    tracker: TokenTracker,
) -> None:
    profile_id = await _profile(client, services, project, "ada")
    ref = TrackingRef(project.id, profile_id, 7, 101, None, "email")
    for _ in range(3):
        response = await client.get(_path(tracker.open_url(ref)))
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"] == "no-store, private"
        assert response.content == PIXEL
    await drain(services)
    opened = _events(services, "email_opened")
    assert [(e["external_id"], e["data"], e["message_id"]) for e in opened] == [
        ("ada", {"campaign_id": 7}, "email_opened:101")
    ]


async def test_invalid_tokens_answer_404_and_record_nothing(
    tracked_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    tracker: TokenTracker,
    unsubscribe: FakeUnsubscribe,
) -> None:
    profile_id = await _profile(client, services, project, "ada")
    ref = TrackingRef(project.id, profile_id, 7, 101, 3, "email")
    click = tracker.token("click", ref, "https://shop.example/")
    forged = TokenTracker("another-secret-key-0123456789", "http://x").token(
        "click", ref, "https://evil.example/"
    )
    for path in (
        f"/t/c/{forged}",
        f"/t/c/{click[:-2]}",
        f"/t/c/{tracker.token('open', ref)}",  # another purpose's token
        "/t/c/evil.example",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "location" not in response.headers
        assert "This link is not valid" in response.text
    response = await client.get("/t/c/https%3A%2F%2Fevil.example")
    assert response.status_code == 404 and "location" not in response.headers
    response = await client.get(f"/t/o/{tracker.token('click', ref, 'https://shop.example/')}")
    assert response.status_code == 404
    assert response.json()["code"] == "resource_missing"
    for method in ("GET", "POST"):
        response = await client.request(method, f"/unsubscribe/{tracker.token('open', ref)}")
        assert response.status_code == 404
    await drain(services)
    assert _events(services, "email_clicked") == []
    assert _events(services, "email_opened") == []
    assert unsubscribe.calls == []


async def test_unsubscribe_page_confirms_before_it_unsubscribes(
    tracked_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    tracker: TokenTracker,
    unsubscribe: FakeUnsubscribe,
) -> None:
    profile_id = await _profile(client, services, project, "ada")
    ref = TrackingRef(project.id, profile_id, 7, 101, 3, "email")
    decorated = tracker.decorate_email(
        EmailMessage(to="a@x.example", from_address="n@x.example", subject="s", text="hi"), ref
    )
    url = decorated.headers["List-Unsubscribe"][1:-1]
    page = await client.get(_path(url))
    assert page.status_code == 200
    assert '<form method="post">' in page.text and "Unsubscribe" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert unsubscribe.calls == []  # a GET (a link scanner) changes nothing
    form = await client.post(_path(url), data={"List-Unsubscribe": "One-Click"})
    assert form.status_code == 200 and "You are unsubscribed" in form.text
    assert unsubscribe.calls == [(project.id, profile_id, 3, 7)]


async def test_one_click_unsubscribe_as_rfc_8058_sends_it(
    tracked_app: TidingsApp,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    tracker: TokenTracker,
    unsubscribe: FakeUnsubscribe,
) -> None:
    ref = TrackingRef(project.id, "p_someone", 7, 101, None, "email")
    response = await client.post(
        _path(tracker.unsubscribe_url(ref)),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert unsubscribe.calls == [(project.id, "p_someone", None, 7)]
    unsubscribe.fail = True
    failed = await client.post(_path(tracker.unsubscribe_url(ref)))
    assert failed.status_code == 404 and "no longer exists" in failed.text


async def test_the_generated_key_is_kept_and_shared(services: Services) -> None:
    def secrets() -> InstallationSecrets:  # each node, or each start, reads it again
        return InstallationSecrets(services.db.writer, services.db.reader)

    first = tracker_for(services.settings, secrets().get)
    second = tracker_for(services.settings, secrets().get)
    ref = TrackingRef(1, "p", 1, 1, None, "email")
    assert second.read_open(first.token("open", ref)) == ref
    configured = services.settings.model_copy(
        update={
            "secret_key": SecretStr("configured-secret-key-123"),
            "public_url": "https://t.example",
        }
    )
    own = tracker_for(configured, secrets().get)
    assert own.read_open(first.token("open", ref)) is None
    assert own.open_url(ref).startswith("https://t.example/t/o/")


def test_a_short_secret_key_setting_is_refused() -> None:
    from pydantic import ValidationError

    from tidings.settings import Settings

    with pytest.raises(ValidationError, match="secret_key"):
        Settings(secret_key="too-short")
    assert Settings(secret_key="sixteen-chars-ok").secret_key is not None


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("tidings.local", "http://tidings.local:8000"),
    ],
)
def test_the_public_url_defaults_to_the_listening_address(host: str, url: str) -> None:
    from tidings.cli import _public_url

    assert _public_url(host, 8000) == url
