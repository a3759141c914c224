"""The Providers page (secrets write-only) and the Subscription types page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.admin.test_project_pages import _as
from tests.conftest import Project
from tests.messaging.helpers import post
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.store.tables_messaging import campaigns, providers, subscription_types

SECRET = "hunter2-very-secret-value"


def _providers(services: Services, project_id: int) -> list[dict[str, Any]]:
    with services.db.reader.connect() as conn:
        rows = conn.execute(sa.select(providers).where(providers.c.project_id == project_id)).all()
    return [dict(r._mapping) for r in rows]


def _type_names(services: Services, project_id: int) -> list[str]:
    with services.db.reader.connect() as conn:
        return [
            str(n)
            for n in conn.execute(
                sa.select(subscription_types.c.name)
                .where(subscription_types.c.project_id == project_id)
                .order_by(subscription_types.c.id)
            ).scalars()
        ]


def _smtp(name: str = "Mail relay", password: str = SECRET, **extra: str) -> dict[str, str]:
    data = {"host": "127.0.0.1", "port": 2525, "username": "relay", "password": password}
    return {
        "name": name,
        "type": "smtp",
        "group": "email",
        "rate_limit": "50",
        "rate_interval": "minute",
        "data": json.dumps(data),
        **extra,
    }


async def test_empty_pages_say_what_to_do_next(owner: httpx.AsyncClient, project: Project) -> None:
    page = await owner.get(f"/admin/p/{project.id}/providers")
    assert page.status_code == 200
    assert "This project has no providers yet." in page.text
    assert f'href="/admin/p/{project.id}/providers/new"' in page.text
    assert f'href="/admin/p/{project.id}/providers" aria-current="page">Providers<' in page.text
    subs = await owner.get(f"/admin/p/{project.id}/subscriptions")
    assert subs.status_code == 200 and "Add a subscription type" in subs.text
    assert "Email" in subs.text and "subscribed" in subs.text  # the channels' defaults


async def test_create_and_edit_a_provider_and_its_secret_is_never_shown(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    form = await owner.get(f"/admin/p/{project.id}/providers/new")
    assert form.status_code == 200
    token = csrf_of(form.text)
    made = await owner.post(
        f"/admin/p/{project.id}/providers/new", data={"csrf": token, **_smtp(is_default="1")}
    )
    assert made.status_code == 303 and made.headers["location"].endswith("done=created")
    [row] = _providers(services, project.id)
    assert row["data"]["password"] == SECRET and row["channel"] == "email"
    assert row["rate_limit"] == 50 and row["rate_interval"] == "minute" and row["is_default"]
    listed = await owner.get(made.headers["location"])
    assert "Mail relay" in listed.text and "50 per minute" in listed.text
    edit = await owner.get(f"/admin/p/{project.id}/providers/{row['id']}")
    assert edit.status_code == 200 and "********" in edit.text
    for html in (listed.text, edit.text):
        assert SECRET not in html
    # Saving the mask back keeps the secret; the name changes.
    shown = re.search(r'<textarea id="f-data"[^>]*>([^<]*)</textarea>', edit.text)
    assert shown is not None
    data = json.loads(shown.group(1).replace("&#34;", '"').replace("&quot;", '"'))
    assert data["password"] == "********"
    saved = await owner.post(
        f"/admin/p/{project.id}/providers/{row['id']}",
        data={"csrf": token, **_smtp(name="Relay two"), "data": json.dumps(data)},
    )
    assert saved.status_code == 303
    [row] = _providers(services, project.id)
    assert row["name"] == "Relay two" and row["data"]["password"] == SECRET
    # A new secret replaces it; a form in error does not echo a typed secret back.
    bad = await owner.post(
        f"/admin/p/{project.id}/providers/{row['id']}",
        data={"csrf": token, **_smtp(name="", password="typed-new-secret")},
    )
    assert bad.status_code == 400 and "typed-new-secret" not in bad.text
    assert SECRET not in bad.text
    changed = await owner.post(
        f"/admin/p/{project.id}/providers/{row['id']}",
        data={"csrf": token, **_smtp(name="Relay two", password="new-secret-2")},
    )
    assert changed.status_code == 303
    assert _providers(services, project.id)[0]["data"]["password"] == "new-secret-2"
    for path in ("/providers", f"/providers/{row['id']}", "/subscriptions"):
        html = (await owner.get(f"/admin/p/{project.id}{path}")).text
        assert "new-secret-2" not in html and SECRET not in html, path


async def test_bad_provider_input_is_shown_at_its_field_and_writes_nothing(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    token = csrf_of((await owner.get(f"/admin/p/{project.id}/providers/new")).text)
    for changes, message in [
        ({"name": ""}, "A provider needs a name."),
        ({"type": "carrier-pigeon"}, "Choose one of logger, smtp"),
        ({"group": "text"}, "A smtp provider sends email, not text."),
        ({"rate_limit": "-3"}, "A whole number from 0"),
        ({"rate_interval": "fortnight"}, "Choose one of second"),
        ({"data": "{not json"}, "The settings are not valid JSON"),
        ({"data": json.dumps({"host": "127.0.0.1"})}, "data.port must be a port number."),
    ]:
        answer = await owner.post(
            f"/admin/p/{project.id}/providers/new", data={"csrf": token, **_smtp(**changes)}
        )
        assert answer.status_code == 400, changes
        assert message in answer.text, (changes, answer.text)
        assert 'class="error"' in answer.text and SECRET not in answer.text
    assert _providers(services, project.id) == []


async def test_forms_without_csrf_are_refused_and_write_nothing(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    for path, data in [
        ("/providers/new", _smtp()),
        ("/subscriptions", {"name": "Product news", "channel": "email"}),
    ]:
        for token in ({}, {"csrf": "forged"}):
            answer = await owner.post(f"/admin/p/{project.id}{path}", data={**token, **data})
            assert answer.status_code == 403 and "CSRF" in answer.text, path
    assert _providers(services, project.id) == []
    assert "Product news" not in _type_names(services, project.id)


async def test_below_admin_cannot_add_a_provider_or_a_type(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    pub = await _as(services, new_client, "pub@example.com", {project.id: Role.PUBLISHER})
    page = await pub.get(f"/admin/p/{project.id}/subscriptions")
    assert page.status_code == 200 and ">Providers<" not in page.text
    assert "needs the admin role" in page.text
    token = csrf_of(page.text)
    assert (await pub.get(f"/admin/p/{project.id}/providers")).status_code == 403
    added = await pub.post(f"/admin/p/{project.id}/providers/new", data={"csrf": token, **_smtp()})
    assert added.status_code == 403
    typed = await pub.post(
        f"/admin/p/{project.id}/subscriptions",
        data={"csrf": token, "name": "Product news", "channel": "email"},
    )
    assert typed.status_code == 403
    assert _providers(services, project.id) == []
    assert "Product news" not in _type_names(services, project.id)


async def test_add_and_rename_a_subscription_type(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/subscriptions")
    token = csrf_of(page.text)
    made = await owner.post(
        f"/admin/p/{project.id}/subscriptions",
        data={"csrf": token, "name": "Product news", "channel": "email", "requires_opt_in": "1"},
    )
    assert made.status_code == 303 and made.headers["location"].endswith("done=type-created")
    listed = await owner.get(made.headers["location"])
    assert "Product news" in listed.text and "not subscribed until they opt in" in listed.text
    with services.db.reader.connect() as conn:
        type_id = conn.execute(
            sa.select(subscription_types.c.id).where(subscription_types.c.name == "Product news")
        ).scalar_one()
    for data, message in [
        ({"name": "   "}, "A subscription type needs a name."),
        ({"name": "x" * 256}, "At most 255 characters."),
    ]:
        bad = await owner.post(
            f"/admin/p/{project.id}/subscriptions/{type_id}", data={"csrf": token, **data}
        )
        assert bad.status_code == 400 and message in bad.text
    bad_new = await owner.post(
        f"/admin/p/{project.id}/subscriptions",
        data={"csrf": token, "name": "Pigeons", "channel": "pigeon"},
    )
    assert bad_new.status_code == 400 and "Choose one of" in bad_new.text
    assert "Pigeons" not in _type_names(services, project.id)
    renamed = await owner.post(
        f"/admin/p/{project.id}/subscriptions/{type_id}",
        data={"csrf": token, "name": "Product updates", "is_public": "1"},
    )
    assert renamed.status_code == 303
    names = _type_names(services, project.id)
    assert "Product updates" in names and "Product news" not in names
    missing = await owner.get(f"/admin/p/{project.id}/subscriptions/999999")
    assert missing.status_code == 404


async def test_payloads_in_names_stay_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    token = csrf_of((await owner.get(f"/admin/p/{project.id}/subscriptions")).text)
    for payload in PAYLOADS:
        made = await owner.post(
            f"/admin/p/{project.id}/providers/new",
            data={"csrf": token, **_smtp(name=payload)},
        )
        assert made.status_code == 303
        typed = await owner.post(
            f"/admin/p/{project.id}/subscriptions",
            data={"csrf": token, "name": payload, "channel": "email"},
        )
        assert typed.status_code == 303
    listed = await owner.get(f"/admin/p/{project.id}/providers")
    assert_inert(listed.text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in listed.text
    subs = await owner.get(f"/admin/p/{project.id}/subscriptions")
    assert_inert(subs.text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in subs.text
    for row in _providers(services, project.id):
        edit = await owner.get(f"/admin/p/{project.id}/providers/{row['id']}")
        assert_inert(edit.text)


async def test_remove_a_provider_unless_a_live_campaign_sends_through_it(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/providers/new")
    token = csrf_of(page.text)
    for name in ("Relay A", "Relay B"):
        made = await owner.post(
            f"/admin/p/{project.id}/providers/new", data={"csrf": token, **_smtp(name=name)}
        )
        assert made.status_code == 303
    a, b = sorted(_providers(services, project.id), key=lambda r: r["id"])
    campaign = await post(
        client,
        project,
        "/campaigns",
        {"type": "trigger", "name": "Receipts", "channel": "email", "provider_id": a["id"]},
    )
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.update(campaigns).where(campaigns.c.id == campaign["id"]).values(state="running")
        )
    listed = await owner.get(f"/admin/p/{project.id}/providers")
    assert f'action="/admin/p/{project.id}/providers/{a["id"]}/remove"' in listed.text
    # Without a CSRF token nothing is removed.
    forged = await owner.post(f"/admin/p/{project.id}/providers/{b['id']}/remove", data={})
    assert forged.status_code == 403
    # The live campaign's provider stays, and the page says why.
    refused = await owner.post(
        f"/admin/p/{project.id}/providers/{a['id']}/remove", data={"csrf": token}
    )
    assert refused.status_code == 409
    assert f"used by campaign {campaign['id']}" in refused.text and "Relay A" in refused.text
    removed = await owner.post(
        f"/admin/p/{project.id}/providers/{b['id']}/remove", data={"csrf": token}
    )
    assert removed.status_code == 303 and removed.headers["location"].endswith("done=removed")
    assert "Provider removed." in (await owner.get(removed.headers["location"])).text
    assert [r["name"] for r in _providers(services, project.id)] == ["Relay A"]
    gone = await owner.post(
        f"/admin/p/{project.id}/providers/{b['id']}/remove", data={"csrf": token}
    )
    assert gone.status_code == 404
