"""Making and changing campaigns in the admin: the form, its checks at each field, the
state buttons; roles and CSRF; payloads in names stay text."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS
from tests.admin.test_journey_editor import assert_text_only
from tests.admin.test_journey_pages import _as as as_role
from tests.conftest import Project, bearer
from tests.messaging.helpers import API, deliver, logger_provider, manual, trigger_campaign
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.messaging.campaigns import CampaignStore
from tidings.store.lists import ListStore


def _campaigns(services: Services) -> CampaignStore:
    assert services.messaging is not None
    return services.messaging.campaigns


def _list(services: Services, project: Project, name: str) -> int:
    store = ListStore(services.db.writer, services.db.reader)
    return store.create(project.id, name=name, type="static", rule=None, tags=[], now=1).id


async def _form(
    browser: httpx.AsyncClient, url: str, fields: list[tuple[str, str]]
) -> httpx.Response:
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    body = urllib.parse.urlencode([("csrf", csrf_of(page.text)), *fields])  # repeated names
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return await browser.post(url, content=body, headers=headers)


def _blast(name: str = "Winter sale", **extra: Any) -> list[tuple[str, str]]:
    fields = {
        "name": name,
        "type": "blast",
        "channel": "email",
        "subscription_id": "",
        "provider_id": "",
        "send_at": "",
        "tags": "",
    }
    fields.update(extra)
    return list(fields.items())


async def test_an_editor_creates_a_blast_with_lists_exclusions_and_a_time(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    gold, tin, opted_out = (_list(services, project, n) for n in ("Gold", "Tin", "Opted out"))
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    base = f"/admin/p/{project.id}/campaigns"
    listing = await editor.get(base)
    assert f'href="{base}/new">New campaign</a>' in listing.text
    form = await editor.get(f"{base}/new")
    assert ">Gold (0)</option>" in form.text and ">Opted out (0)</option>" in form.text
    made = await _form(
        editor,
        f"{base}/new",
        [
            *_blast(send_at="2030-01-02T09:30", tags="sale, winter"),
            ("list_ids", str(gold)),
            ("list_ids", str(tin)),
            ("exclusion_list_ids", str(opted_out)),
            ("send_in_user_timezone", "on"),
        ],
    )
    assert made.status_code == 303, made.text
    [row] = _campaigns(services).campaigns(project.id, 5, None).results
    assert made.headers["location"] == f"{base}/{row['id']}?done=created"
    assert (row["name"], row["type"], row["channel"], row["state"]) == (
        "Winter sale",
        "blast",
        "email",
        "draft",
    )
    assert row["list_ids"] == [gold, tin] and row["exclusion_list_ids"] == [opted_out]
    assert row["send_in_user_timezone"] is True and row["tags"] == ["sale", "winter"]
    # Read in the project's time zone (the fixture's is Australia/Sydney: UTC+11 then).
    expected = datetime(2030, 1, 1, 22, 30, tzinfo=UTC)
    assert row["send_at"] == int(expected.timestamp() * 1_000_000)
    assert services.messaging is not None
    default = services.messaging.subscriptions.default_for(project.id, "email")
    assert row["subscription_id"] == default.id
    page = await editor.get(made.headers["location"])
    assert "Campaign created: add a template for each locale." in page.text
    assert f'action="{base}/{row["id"]}/templates/new"' in page.text
    edit = await editor.get(f"{base}/{row['id']}/edit")
    assert f'<option value="{gold}" selected>' in edit.text
    assert 'value="2030-01-02T09:30"' in edit.text


async def test_problems_are_shown_at_their_field_and_nothing_is_saved(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    base = f"/admin/p/{project.id}/campaigns"
    assert services.messaging is not None
    text_type = services.messaging.subscriptions.default_for(project.id, "text")
    no_name = await _form(owner, f"{base}/new", _blast(" "))
    assert no_name.status_code == 400
    assert "A campaign needs a name of 1 to 255 characters." in no_name.text
    wrong_type = await _form(owner, f"{base}/new", _blast(subscription_id=str(text_type.id)))
    assert wrong_type.status_code == 400
    assert f"Subscription type {text_type.id} is for text, not email." in wrong_type.text
    bad_time = await _form(owner, f"{base}/new", _blast(send_at="tomorrow"))
    assert bad_time.status_code == 400 and "A date and time (YYYY-MM-DDTHH:MM)." in bad_time.text
    missing_list = await _form(owner, f"{base}/new", [*_blast(), ("list_ids", "999999")])
    assert missing_list.status_code == 400 and "No list 999999." in missing_list.text
    assert _campaigns(services).campaigns(project.id, 5, None).results == []


async def test_support_cannot_edit_and_every_form_needs_its_token(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    row = _campaigns(services).create_campaign(
        project.id,
        {
            "type": "trigger",
            "name": "Welcome",
            "channel": "email",
            "subscription_id": _default(services, project),
        },
    )
    base = f"/admin/p/{project.id}/campaigns"
    support = await as_role(services, new_client, Role.SUPPORT, project.id)
    page = await support.get(f"{base}/{row['id']}")
    assert page.status_code == 200
    assert ">Edit</a>" not in page.text and ">Start</button>" not in page.text
    token = csrf_of(page.text)
    for path in ("/new", f"/{row['id']}/edit"):
        assert (await support.get(base + path)).status_code == 403
        refused = await support.post(base + path, data={"csrf": token, **dict(_blast("Hacked"))})
        assert refused.status_code == 403
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    forged = await editor.post(f"{base}/{row['id']}/edit", data={"csrf": "x", "name": "Renamed"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert (await editor.post(f"{base}/new", data=dict(_blast("No token")))).status_code == 403
    renamed = await _form(
        editor,
        f"{base}/{row['id']}/edit",
        [("name", "Renamed"), ("channel", "email"), ("tags", "")],
    )
    assert renamed.status_code == 303
    stored = _campaigns(services).campaign(project.id, row["id"])
    assert stored["name"] == "Renamed" and stored["type"] == "trigger"
    assert [c["name"] for c in _campaigns(services).campaigns(project.id, 5, None).results] == [
        "Renamed"
    ]


def _default(services: Services, project: Project) -> int:
    assert services.messaging is not None
    return services.messaging.subscriptions.default_for(project.id, "email").id


async def test_state_buttons_need_the_publisher_role_and_follow_the_rules(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    sub = _default(services, project)
    store = _campaigns(services)
    blast = store.create_campaign(
        project.id, {"type": "blast", "name": "Sale", "channel": "email", "subscription_id": sub}
    )
    trigger = store.create_campaign(
        project.id, {"type": "trigger", "name": "Hi", "channel": "email", "subscription_id": sub}
    )
    base = f"/admin/p/{project.id}/campaigns"
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    page = await editor.get(f"{base}/{blast['id']}")
    assert ">Schedule</button>" not in page.text
    denied = await editor.post(
        f"{base}/{blast['id']}/state", data={"csrf": csrf_of(page.text), "state": "scheduled"}
    )
    assert denied.status_code == 403
    publisher = await as_role(services, new_client, Role.PUBLISHER, project.id)
    page = await publisher.get(f"{base}/{blast['id']}")
    token = csrf_of(page.text)
    assert ">Schedule</button>" in page.text and ">Abort</button>" not in page.text
    early = await publisher.post(
        f"{base}/{blast['id']}/state", data={"csrf": token, "state": "scheduled"}
    )
    assert early.status_code == 409 and "A scheduled blast needs send_at." in early.text
    assert store.campaign(project.id, blast["id"])["state"] == "draft"
    gold = _list(services, project, "Gold")
    store.update_campaign(
        project.id, blast["id"], {"list_ids": [gold], "send_at": 4_102_444_800_000_000}
    )
    done = await publisher.post(
        f"{base}/{blast['id']}/state", data={"csrf": token, "state": "scheduled"}
    )
    assert (
        done.status_code == 303
        and done.headers["location"] == f"{base}/{blast['id']}?done=scheduled"
    )
    scheduled = await publisher.get(done.headers["location"])
    assert "Scheduled: it loads its recipients" in scheduled.text
    assert ">Back to draft</button>" in scheduled.text and ">Abort</button>" in scheduled.text
    # A scheduled blast keeps its lists: the edit form does not offer them.
    edit = await publisher.get(f"{base}/{blast['id']}/edit")
    assert 'id="blast-fields"' not in edit.text
    aborted = await publisher.post(
        f"{base}/{blast['id']}/state", data={"csrf": token, "state": "aborting"}
    )
    assert aborted.status_code == 303
    assert store.campaign(project.id, blast["id"])["state"] == "aborting"
    started = await publisher.post(
        f"{base}/{trigger['id']}/state", data={"csrf": token, "state": "running"}
    )
    assert (
        started.status_code == 303
        and store.campaign(project.id, trigger["id"])["state"] == "running"
    )
    paused = await publisher.post(
        f"{base}/{trigger['id']}/state", data={"csrf": token, "state": "draft"}
    )
    assert (
        paused.status_code == 303 and store.campaign(project.id, trigger["id"])["state"] == "draft"
    )
    bogus = await publisher.post(
        f"{base}/{trigger['id']}/state", data={"csrf": token, "state": "finished"}
    )
    assert bogus.status_code == 400


async def test_payloads_in_campaign_and_list_names_stay_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    _list(services, project, PAYLOADS[0])
    row = _campaigns(services).create_campaign(
        project.id,
        {
            "type": "blast",
            "name": PAYLOADS[1],
            "channel": "email",
            "subscription_id": _default(services, project),
            "tags": [PAYLOADS[2]],
        },
    )
    base = f"/admin/p/{project.id}/campaigns"
    for path in ("", "/new", f"/{row['id']}", f"/{row['id']}/edit"):
        page = await owner.get(base + path)
        assert page.status_code == 200, path
        assert_text_only(page.text)
    refused = await _form(owner, f"{base}/new", _blast(PAYLOADS[2], send_at=PAYLOADS[0]))
    assert refused.status_code == 400
    assert_text_only(refused.text)


async def test_the_campaign_page_shows_every_stage_of_the_funnel_with_its_share(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    for who in ("u1", "u2"):
        response = await client.post(
            f"{API}/campaigns/{campaign['id']}/trigger",
            json={"user": {"external_id": who, "email": f"{who}@example.com"}},
            headers=bearer(project.sk),
        )
        assert response.status_code == 200, response.text
    page = await owner.get(f"/admin/p/{project.id}/campaigns/{campaign['id']}")
    assert '<dt>Pending</dt><dd>2</dd><dd class="share">100.0% of total</dd>' in page.text
    assert "<dt>Opens</dt><dd>0</dd></div>" in page.text  # nothing sent: no share of it
    assert await deliver(services) == 2
    with services.db.writer.begin() as conn:
        CampaignStore.bump_stat(conn, campaign["id"], "opens")
    page = await owner.get(f"/admin/p/{project.id}/campaigns/{campaign['id']}")
    assert '<dt>Sent</dt><dd>2</dd><dd class="share">100.0% of total</dd>' in page.text
    assert '<dt>Skipped</dt><dd>0</dd><dd class="share">0.0% of total</dd>' in page.text
    assert '<dt>Opens</dt><dd>1</dd><dd class="share">50.0% of sent</dd>' in page.text
