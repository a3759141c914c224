"""Templates: refused when they do not parse (line and column), MJML and inlined CSS,
locale fallback, the sandbox, preview and proof, one per campaign and locale."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer
from tests.messaging.helpers import (
    API,
    EMAIL_TEMPLATE,
    deliver,
    logger_provider,
    manual,
    patch,
    post,
    send_rows,
    sent_by,
    trigger_campaign,
)
from tidings.bootstrap import Services
from tidings.domain.channels import EmailMessage, TextMessage

MJML = """<mjml>
  <mj-head><mj-style inline="inline">.hello { color: #ff0000; }</mj-style></mj-head>
  <mj-body><mj-section><mj-column>
    <mj-text css-class="hello">Hello {{ user.first_name }}</mj-text>
    <mj-button href="https://shop.test/{{ event.sku }}">Buy</mj-button>
  </mj-column></mj-section></mj-body>
</mjml>"""


async def _template(
    client: httpx.AsyncClient,
    project: Project,
    campaign_id: int,
    data: dict[str, Any],
    locale: str = "en",
) -> httpx.Response:
    return await client.post(
        f"{API}/templates",
        json={"campaign_id": campaign_id, "locale": locale, "data": data},
        headers=bearer(project.sk),
    )


async def test_a_template_that_does_not_parse_is_refused_with_line_and_column(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": "T", "channel": "email"}
    )
    broken = {**EMAIL_TEMPLATE, "html": "<p>fine</p>\n<p>{% if user.vip %}VIP</p>"}
    response = await _template(client, project, campaign["id"], broken)
    body = assert_problem(response, 422, "validation_failed")
    assert body["param"] == "data.html"
    assert "line 2, column" in body["message"]
    subject = await _template(
        client, project, campaign["id"], {**EMAIL_TEMPLATE, "subject": "Hi {{ user.name"}
    )
    assert "line 1, column 4" in assert_problem(subject, 422, "validation_failed")["message"]
    bad_mjml = await _template(
        client,
        project,
        campaign["id"],
        {**EMAIL_TEMPLATE, "html": None, "mjml": "<mjml><mj-body>{{ x </mj-body></mjml>"},
    )
    assert assert_problem(bad_mjml, 422, "validation_failed")["param"] == "data.mjml"
    shape = await _template(client, project, campaign["id"], {"subject": "x"})
    assert_problem(shape, 400, "parameter_missing")
    listed = (await client.get(f"{API}/templates", headers=bearer(project.sk))).json()
    assert listed["results"] == []  # nothing half-written

    ok = await _template(client, project, campaign["id"], EMAIL_TEMPLATE)
    assert ok.status_code == 201
    twice = await _template(client, project, campaign["id"], EMAIL_TEMPLATE)
    assert_problem(twice, 409, "resource_already_exists")
    changed = await client.patch(
        f"{API}/templates/{ok.json()['id']}", json={"data": broken}, headers=bearer(project.sk)
    )
    assert_problem(changed, 422, "validation_failed")
    still = (
        await client.get(f"{API}/templates/{ok.json()['id']}", headers=bearer(project.sk))
    ).json()
    assert still["data"] == EMAIL_TEMPLATE


async def test_mjml_becomes_html_with_css_inlined(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": "T", "channel": "email"}
    )
    data = {"from": {"address": "shop@example.com"}, "subject": "Hi", "mjml": MJML}
    created = await _template(client, project, campaign["id"], data)
    assert created.status_code == 201, created.text
    preview = await post(
        client,
        project,
        f"/templates/{created.json()['id']}/preview",
        {"user": {"first_name": "<Bo>"}, "event": {"sku": "a b"}},
    )
    html = preview["message"]["html"]
    assert "Hello &lt;Bo&gt;" in html
    assert "color: #ff0000" in html  # inlined
    assert 'href="https://shop.test/a b"' in html
    assert "Hello <Bo>" in preview["message"]["text"]  # derived from the HTML


async def test_locale_fallback_and_template_missing(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    provider = await logger_provider(client, project)
    # The project's locale is en-AU (tests/conftest.py).
    campaign = await trigger_campaign(
        client, project, template={**EMAIL_TEMPLATE, "subject": "English"}, locale="en", live=False
    )
    await _template(
        client, project, campaign["id"], {**EMAIL_TEMPLATE, "subject": "Deutsch"}, locale="de"
    )
    await patch(client, project, f"/campaigns/{campaign['id']}", {"state": "running"})
    for external_id, locale in (("de1", "de-AT"), ("fr1", "fr-FR"), ("en1", None)):
        user: dict[str, Any] = {"external_id": external_id, "email": f"{external_id}@example.com"}
        if locale:
            user["locale"] = locale
        await post(client, project, f"/campaigns/{campaign['id']}/trigger", {"user": user})
    await deliver(services)
    subjects = {
        m.to: m.subject for m in sent_by(services, provider["id"]) if isinstance(m, EmailMessage)
    }
    assert subjects == {
        "de1@example.com": "Deutsch",
        "fr1@example.com": "English",  # fr-FR, fr: none; the project's en-AU → en
        "en1@example.com": "English",
    }

    lonely = await trigger_campaign(
        client, project, template={**EMAIL_TEMPLATE, "subject": "Nur"}, locale="de"
    )
    await post(
        client, project, f"/campaigns/{lonely['id']}/trigger", {"user": {"external_id": "fr1"}}
    )
    await deliver(services)
    [row] = send_rows(services, lonely["id"])
    assert row["state"] == "failed" and row["reason"] == "template_missing"


async def test_rendering_is_sandboxed(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project, group="text")
    campaign = await trigger_campaign(
        client,
        project,
        channel="text",
        template={"text": "{% include '/etc/passwd' %}"},
    )
    looping = await trigger_campaign(
        client,
        project,
        channel="text",
        template={
            "text": "{% for i in (1..1000000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}"
        },
    )
    for c in (campaign, looping):
        await post(
            client,
            project,
            f"/campaigns/{c['id']}/trigger",
            {"user": {"external_id": "u1", "phone": "+61400000000"}},
        )
    await deliver(services)
    [included] = send_rows(services, campaign["id"])
    assert included["state"] == "failed" and included["reason"].startswith("template_error")
    [looped] = send_rows(services, looping["id"])
    assert looped["state"] == "failed" and "limit" in looped["reason"]


async def test_proof_sends_for_real_and_duplicate_copies_templates(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project, group="text")
    campaign = await trigger_campaign(
        client, project, channel="text", template={"text": "Code {{ context.code }}"}, live=False
    )
    template = (
        await client.get(
            f"{API}/templates?campaign_id={campaign['id']}", headers=bearer(project.sk)
        )
    ).json()["results"][0]
    proof = await post(
        client,
        project,
        f"/templates/{template['id']}/proof",
        {"recipient": "+61 400 000 001", "context": {"code": "42"}},
    )
    assert proof["success"] is True and proof["provider_message_id"].startswith("log_")
    preview = await post(
        client, project, f"/templates/{template['id']}/preview", {"context": {"code": "7"}}
    )
    assert preview["message"] == {"to": "+10000000000", "body": "Code 7"}
    bad = await client.post(
        f"{API}/templates/{template['id']}/proof",
        json={"recipient": "not a number"},
        headers=bearer(project.sk),
    )
    assert_problem(bad, 422, "validation_failed")

    copy = await post(client, project, f"/campaigns/{campaign['id']}/duplicate", {})
    assert copy["state"] == "draft" and copy["name"] == "Welcome (copy)"
    copied = (
        await client.get(f"{API}/templates?campaign_id={copy['id']}", headers=bearer(project.sk))
    ).json()["results"]
    assert [t["data"] for t in copied] == [{"text": "Code {{ context.code }}"}]
    _ = TextMessage


async def test_every_liquid_root_is_there(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    campaign = await post(
        client, project, "/campaigns", {"type": "trigger", "name": "T", "channel": "text"}
    )
    text = (
        "{{ user.first_name }}/{{ user.data.plan }}/{{ event.sku }}/{{ journey.name }}/"
        "{{ project.name }}/{{ project.locale }}/{{ context.campaign_id }}/{{ context.extra }}"
    )
    created = await _template(client, project, campaign["id"], {"text": text})
    preview = await post(
        client,
        project,
        f"/templates/{created.json()['id']}/preview",
        {
            "user": {"first_name": "Ann", "data": {"plan": "pro"}},
            "event": {"sku": "s1"},
            "journey": {"name": "Onboarding"},
            "context": {"extra": "x"},
        },
    )
    assert preview["message"]["body"] == f"Ann/pro/s1/Onboarding/Test/en-AU/{campaign['id']}/x"


async def test_creates_with_an_idempotency_key_happen_once(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    headers = bearer(project.sk, **{"Idempotency-Key": "c-1"})
    body = {"type": "trigger", "name": "Once", "channel": "email"}
    first = await client.post(f"{API}/campaigns", json=body, headers=headers)
    again = await client.post(f"{API}/campaigns", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post(f"{API}/campaigns", json={**body, "name": "Other"}, headers=headers)
    assert_problem(other, 409, "idempotency_key_mismatch")
    listed = (await client.get(f"{API}/campaigns", headers=bearer(project.sk))).json()["results"]
    assert len(listed) == 1

    template = {"campaign_id": first.json()["id"], "locale": "en", "data": EMAIL_TEMPLATE}
    keyed = bearer(project.sk, **{"Idempotency-Key": "t-1"})
    made = await client.post(f"{API}/templates", json=template, headers=keyed)
    replayed = await client.post(f"{API}/templates", json=template, headers=keyed)
    assert made.status_code == replayed.status_code == 201
    assert made.json()["id"] == replayed.json()["id"]
    provider = {"type": "logger", "name": "L", "group": "email"}
    keyed = bearer(project.sk, **{"Idempotency-Key": "p-1"})
    one = await client.post(f"{API}/providers", json=provider, headers=keyed)
    two = await client.post(f"{API}/providers", json=provider, headers=keyed)
    assert one.json()["id"] == two.json()["id"]
    assert (
        len((await client.get(f"{API}/providers", headers=bearer(project.sk))).json()["results"])
        == 1
    )
