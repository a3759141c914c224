"""A campaign's templates in the admin: the editor per locale, its errors with line and
column at their field, the live preview of what is typed (sandboxed, its own policy), a
proof sent to a real SMTP server; roles, CSRF, payloads that stay text."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS
from tests.admin.test_journey_editor import assert_text_only
from tests.admin.test_journey_pages import _as as as_role
from tests.conftest import Project
from tests.messaging.helpers import post
from tidings.admin.campaigns import PREVIEW_POLICY
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.messaging.campaigns import CampaignStore

FORM = {
    "locale": "en",
    "from.name": "Shop",
    "from.address": "shop@example.com",
    "reply_to": "",
    "subject": "Hi {{ user.first_name | default: 'there' }}",
    "preheader": "",
    "format": "html",
    "body": '<p style="color:red">Hello {{ user.first_name | default: "friend" }}</p>',
    "text": "",
}


def _store(services: Services) -> CampaignStore:
    assert services.messaging is not None
    return services.messaging.campaigns


def _campaign(services: Services, project: Project, channel: str = "email", **extra: Any) -> int:
    assert services.messaging is not None
    sub = services.messaging.subscriptions.default_for(project.id, channel).id
    values = {"type": "trigger", "name": "Welcome", "channel": channel, "subscription_id": sub}
    return int(_store(services).create_campaign(project.id, {**values, **extra})["id"])


def _templates(services: Services, project: Project, campaign_id: int) -> list[dict[str, Any]]:
    return _store(services).templates(project.id, 10, None, campaign_id=campaign_id).results


async def _submit(
    browser: httpx.AsyncClient, url: str, action: str, **fields: str
) -> httpx.Response:
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    return await browser.post(action, data={"csrf": csrf_of(page.text), **fields})


async def test_an_editor_adds_a_template_per_locale_and_edits_it(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    campaign_id = _campaign(services, project)
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    new = await owner.get(f"{base}/templates/new?locale=fr")
    assert new.status_code == 200 and 'value="fr"' in new.text
    assert 'sandbox="" title="Preview of the template"' in new.text
    made = await _submit(owner, f"{base}/templates/new", f"{base}/templates/new", **FORM)
    assert made.status_code == 303, made.text
    [row] = _templates(services, project, campaign_id)
    assert made.headers["location"] == f"{base}/templates/{row['id']}/edit?done=saved"
    assert row["locale"] == "en" and row["type"] == "email"
    assert row["data"] == {
        "from": {"name": "Shop", "address": "shop@example.com"},
        "subject": "Hi {{ user.first_name | default: 'there' }}",
        "html": '<p style="color:red">Hello {{ user.first_name | default: "friend" }}</p>',
    }
    edit_url = made.headers["location"]
    page = await owner.get(edit_url)
    assert "Saved." in page.text and "Send a proof" in page.text
    assert f'src="{base}/templates/{row["id"]}/preview"' in page.text
    # The same locale twice is refused at the locale field.
    again = await _submit(owner, f"{base}/templates/new", f"{base}/templates/new", **FORM)
    assert again.status_code == 400
    assert "has a template for locale &#39;en&#39; already" in again.text
    # Changed: MJML instead of HTML, a text part; cc (not in the editor) is kept.
    _store(services).update_template(
        project.id, row["id"], data={**row["data"], "cc": "cc@example.com"}
    )
    mjml = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ user.first_name }}</mj-text></mj-column></mj-section></mj-body></mjml>"
    changed = await _submit(
        owner,
        edit_url,
        f"{base}/templates/{row['id']}/edit",
        **{**FORM, "format": "mjml", "body": mjml, "text": "Hi"},
    )
    assert changed.status_code == 303
    stored = _store(services).template(project.id, row["id"])
    assert stored["data"]["mjml"] == mjml and "html" not in stored["data"]
    assert stored["data"]["cc"] == "cc@example.com" and stored["data"]["text"] == "Hi"
    assert "<mj-text>" not in stored["compiled"]["html"]  # compiled at save


async def test_liquid_and_mjml_errors_show_at_their_field_with_line_and_column(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    campaign_id = _campaign(services, project)
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    liquid = await _submit(
        owner,
        f"{base}/templates/new",
        f"{base}/templates/new",
        **{**FORM, "subject": "Hi {% if %}"},
    )
    assert liquid.status_code == 400
    assert (
        '<p class="error" id="e-subject" data-error-for="subject">Liquid syntax error at line 1, '
        "column 7: missing expression</p>" in liquid.text
    )
    assert 'value="Hi {% if %}"' in liquid.text  # what was typed stays in the form
    mjml = "<mjml><mj-body>\n  <mj-section>\n    <mj-bogus>Hi</mj-bogus>\n  </mj-section>\n</mj-body></mjml>"
    broken = await _submit(
        owner,
        f"{base}/templates/new",
        f"{base}/templates/new",
        **{**FORM, "format": "mjml", "body": mjml},
    )
    assert broken.status_code == 400
    assert "MJML: unknown or misplaced tag &lt;mj-bogus&gt; at line 3, column 5" in broken.text
    missing = await _submit(
        owner,
        f"{base}/templates/new",
        f"{base}/templates/new",
        **{**FORM, "from.address": "", "locale": "xx-!!"},
    )
    assert missing.status_code == 400 and 'id="e-locale"' in missing.text
    assert _templates(services, project, campaign_id) == []


async def test_the_preview_renders_what_is_typed_inert_in_its_own_policy(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    campaign_id = _campaign(services, project)
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    page = await owner.get(f"{base}/templates/new?locale=en")
    token = csrf_of(page.text)
    assert (
        f'formaction="{base}/templates/preview" formtarget="preview-frame" formnovalidate>'
        in page.text
    )
    assert '<iframe class="preview" name="preview-frame" id="preview-frame" sandbox=""' in page.text
    body = '<p class="hi">Hello {{ user.first_name | default: "friend" }}</p><script>parent.alert(1)</script>'
    frame = await owner.post(
        f"{base}/templates/preview", data={**FORM, "body": body, "csrf": token}
    )
    assert frame.status_code == 200
    assert '<p class="hi">Hello friend</p>' in frame.text
    assert frame.headers.get_list("content-security-policy") == [PREVIEW_POLICY]
    assert "sandbox" in PREVIEW_POLICY and "script-src" not in PREVIEW_POLICY
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    broken = await owner.post(
        f"{base}/templates/preview", data={**FORM, "body": "{% for %}", "csrf": token}
    )
    assert "The template could not be rendered." in broken.text and "line 1" in broken.text
    refused = await owner.post(f"{base}/templates/preview", data=FORM)
    assert refused.status_code == 403
    checked = await owner.post(
        f"{base}/templates/check",
        data={**FORM, "subject": "Hi {{ user.first_name | }}", "csrf": token},
    )
    assert checked.json()["errors"]["subject"].startswith("Liquid syntax error at line 1")
    fine = await owner.post(f"{base}/templates/check", data={**FORM, "csrf": token})
    assert fine.json() == {
        "errors": {},
        "summary": {"subject": "Hi there", "from": "Shop <shop@example.com>"},
    }
    no_token = await owner.post(f"{base}/templates/check", data=FORM)
    assert no_token.status_code == 403 and no_token.json()["error"] == "Form refused"


async def test_a_text_template_previews_as_escaped_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    campaign_id = _campaign(services, project, channel="text")
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    page = await owner.get(f"{base}/templates/new?locale=en")
    assert 'name="text"' in page.text and 'name="subject"' not in page.text
    frame = await owner.post(
        f"{base}/templates/preview",
        data={
            "csrf": csrf_of(page.text),
            "locale": "en",
            "text": PAYLOADS[0] + " {{ project.name }}",
        },
    )
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Test" in frame.text
    assert "<script>" not in frame.text


async def test_support_sees_the_editor_but_cannot_save_or_send_a_proof(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    campaign_id = _campaign(services, project)
    row = _store(services).create_template(
        project.id,
        campaign_id,
        "en",
        {"from": {"address": "a@example.com"}, "subject": "S", "html": "<p>x</p>"},
    )
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    url = f"{base}/templates/{row['id']}/edit"
    support = await as_role(services, new_client, Role.SUPPORT, project.id)
    page = await support.get(url)
    assert page.status_code == 200 and ">Save</button>" not in page.text
    assert "Send a proof" not in page.text
    assert (await support.get(f"{base}/templates/new")).status_code == 403
    token = csrf_of(page.text)
    saved = await support.post(url, data={**FORM, "csrf": token, "subject": "Changed"})
    assert saved.status_code == 403
    proof = await support.post(
        f"{base}/templates/{row['id']}/proof", data={"csrf": token, "recipient": "a@b.c"}
    )
    assert proof.status_code == 403
    preview = await support.post(
        f"{base}/templates/{row['id']}/preview", data={**FORM, "csrf": token}
    )
    assert preview.status_code == 200  # looking is reading
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    forged = await editor.post(url, data={**FORM, "csrf": "nope", "subject": "Changed"})
    assert forged.status_code == 403
    assert _store(services).template(project.id, row["id"])["data"]["subject"] == "S"


@pytest.fixture
def smtpd() -> Iterator[tuple[list[Any], int]]:
    mail: list[Any] = []

    class Inbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mail.append(envelope)
            return "250 Message accepted for delivery"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mail, port
    finally:
        controller.stop()


async def test_a_proof_goes_to_a_real_smtp_server(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    smtpd: tuple[list[Any], int],
) -> None:
    mail, port = smtpd
    campaign_id = _campaign(services, project)
    row = _store(services).create_template(
        project.id,
        campaign_id,
        "en",
        {
            "from": {"name": "Shop", "address": "shop@example.com"},
            "subject": "Hi {{ user.first_name | default: 'there' }}",
            "html": "<p>Proof for {{ project.name }}</p>",
        },
    )
    url = f"/admin/p/{project.id}/campaigns/{campaign_id}/templates/{row['id']}"
    no_provider = await _submit(owner, f"{url}/edit", f"{url}/proof", recipient="ann@example.com")
    assert no_provider.status_code == 400
    assert "No email provider is set up for this campaign." in no_provider.text
    await post(
        client,
        project,
        "/providers",
        {
            "type": "smtp",
            "name": "Local",
            "group": "email",
            "is_default": True,
            "data": {"host": "127.0.0.1", "port": port, "tls": "none"},
        },
    )
    bad = await _submit(owner, f"{url}/edit", f"{url}/proof", recipient="not an address")
    assert bad.status_code == 400 and 'id="e-recipient"' in bad.text
    sent = await _submit(owner, f"{url}/edit", f"{url}/proof", recipient="Ann@Example.com")
    assert sent.status_code == 303 and sent.headers["location"] == f"{url}/edit?done=proof"
    assert "Proof sent." in (await owner.get(sent.headers["location"])).text
    [envelope] = mail
    assert envelope.rcpt_tos == ["Ann@example.com"]  # the domain normalised
    parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert parsed["Subject"] == "Hi there"
    html = parsed.get_body(("html",))
    assert html is not None and "<p>Proof for Test</p>" in html.get_content()


async def test_payloads_in_template_bodies_stay_text_in_the_editor(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    campaign_id = _campaign(services, project)
    row = _store(services).create_template(
        project.id,
        campaign_id,
        "en",
        {
            "from": {"name": PAYLOADS[1], "address": "a@example.com"},
            "subject": PAYLOADS[2],
            "html": PAYLOADS[0] + PAYLOADS[2],
            "text": PAYLOADS[2],
        },
    )
    base = f"/admin/p/{project.id}/campaigns/{campaign_id}"
    for path in (f"/templates/{row['id']}/edit", f"/templates/{row['id']}", ""):
        page = await owner.get(base + path)
        assert page.status_code == 200
        assert_text_only(page.text)
    page = await owner.get(f"{base}/templates/{row['id']}/edit")
    assert "&lt;/textarea&gt;&lt;svg onload=alert(2)&gt;" in page.text
    refused = await owner.post(
        f"{base}/templates/{row['id']}/edit",
        data={
            **FORM,
            "csrf": csrf_of(page.text),
            "subject": PAYLOADS[0] + "{% if %}",
            "body": PAYLOADS[2],
        },
    )
    assert refused.status_code == 400
    assert_text_only(refused.text)
