"""Campaign pages: the list with the delivery funnel, a campaign's templates, the
sandboxed preview of a template."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.admin.conftest import Clock, make_account, sign_in
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.conftest import Project, bearer
from tests.messaging.helpers import API, deliver, logger_provider, manual, trigger_campaign
from tidings.bootstrap import Services
from tidings.domain.auth import Role


async def test_the_list_shows_each_campaign_with_its_state_and_funnel(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
) -> None:
    empty = await owner.get(f"/admin/p/{project.id}/campaigns")
    assert empty.status_code == 200 and "No campaigns yet." in empty.text
    assert f'href="/admin/p/{project.id}/campaigns" aria-current="page">Campaigns<' in empty.text
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
    assert await deliver(services) == 2
    page = await owner.get(f"/admin/p/{project.id}/campaigns")
    assert f'<a href="/admin/p/{project.id}/campaigns/{campaign["id"]}">Welcome</a>' in page.text
    assert ">running<" in page.text
    row = page.text[
        page.text.index(">Welcome</a>") : page.text.index("</tr>", page.text.index(">Welcome</a>"))
    ]
    # total, sent, failed, opens, clicks, bounced, unsubscribed
    cells = [c.split("</td>")[0] for c in row.split('<td class="num">')[1:]]
    assert cells == ["2", "2", "0", "0", "0", "0", "0"]
    detail = await owner.get(f"/admin/p/{project.id}/campaigns/{campaign['id']}")
    assert detail.status_code == 200
    assert "<dt>Sent</dt><dd>2</dd>" in detail.text and "<dt>Total</dt><dd>2</dd>" in detail.text
    assert ">en</a>" in detail.text
    assert "Hello {{ user.first_name | default: &#39;there&#39; }}" in detail.text


async def test_the_preview_is_a_sandboxed_frame_with_its_own_policy(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    template = {
        "from": {"name": "Shop", "address": "shop@example.com"},
        "subject": "Hi {{ user.first_name | default: 'there' }}",
        "html": '<p style="color:red">Hi {{ user.first_name | default: "friend" }}</p>'
        "<script>parent.alert(1)</script>",
        "text": "Hi there",
    }
    campaign = await trigger_campaign(client, project, template=template, live=False)
    listed = await client.get(
        f"{API}/templates?campaign_id={campaign['id']}", headers=bearer(project.sk)
    )
    [stored] = listed.json()["results"]
    base = f"/admin/p/{project.id}/campaigns/{campaign['id']}/templates/{stored['id']}"
    page = await owner.get(base)
    assert page.status_code == 200
    assert (
        "<dd>Hi there</dd>" in page.text and "<dd>Shop &lt;shop@example.com&gt;</dd>" in page.text
    )
    assert (
        f'<iframe class="preview" sandbox="" title="Preview of the email" src="{base}/preview">'
        in page.text
    )
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert_inert(page.text)
    frame = await owner.get(f"{base}/preview")
    assert frame.status_code == 200
    assert '<p style="color:red">Hi friend</p>' in frame.text  # the message itself
    policy = frame.headers.get_list("content-security-policy")
    assert policy == [
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
    ]
    assert frame.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert frame.headers["cache-control"] == "no-store"
    # Another campaign's path does not reach the template; unknown ids are 404.
    other = await trigger_campaign(client, project, live=False)
    wrong = f"/admin/p/{project.id}/campaigns/{other['id']}/templates/{stored['id']}"
    assert (await owner.get(wrong)).status_code == 404
    assert (await owner.get(wrong + "/preview")).status_code == 404
    assert (await owner.get(f"/admin/p/{project.id}/campaigns/999")).status_code == 404
    assert (await owner.get(f"/admin/p/{project.id}/campaigns/x")).status_code == 404


async def test_every_role_may_look_and_other_projects_may_not(
    services: Services,
    client: httpx.AsyncClient,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    campaign = await trigger_campaign(client, project, live=False)
    make_account(services, "support@example.com", roles={project.id: Role.SUPPORT})
    browser = new_client()
    assert (await sign_in(browser, "support@example.com")).status_code == 303
    assert (await browser.get(f"/admin/p/{project.id}/campaigns")).status_code == 200
    detail = await browser.get(f"/admin/p/{project.id}/campaigns/{campaign['id']}")
    assert detail.status_code == 200
    make_account(services, "stranger@example.com", roles={})
    stranger = new_client()
    assert (await sign_in(stranger, "stranger@example.com")).status_code == 303
    assert (await stranger.get(f"/admin/p/{project.id}/campaigns")).status_code == 404


async def test_payloads_in_campaign_and_template_text_stay_text(
    owner: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    template = {
        "from": {"name": PAYLOADS[1], "address": "shop@example.com"},
        "subject": PAYLOADS[0],
        "html": "<p>x</p>",
        "text": PAYLOADS[2],
    }
    campaign = await trigger_campaign(
        client, project, template=template, live=False, name=PAYLOADS[1], tags=[PAYLOADS[2]]
    )
    [stored] = (
        await client.get(
            f"{API}/templates?campaign_id={campaign['id']}", headers=bearer(project.sk)
        )
    ).json()["results"]
    for path in (
        "/campaigns",
        f"/campaigns/{campaign['id']}",
        f"/campaigns/{campaign['id']}/templates/{stored['id']}",
    ):
        page = await owner.get(f"/admin/p/{project.id}{path}")
        assert page.status_code == 200, path
        assert_inert(page.text)
