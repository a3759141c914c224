"""The admin's template preview and report chart in Debian's chromium: the sandboxed
frame shows the message with its styles, its script does not run, the chart loads."""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.admin.conftest import Site, sign_in


def _post(site: Site, path: str, body: Any) -> Any:
    response = httpx.post(
        f"{site.url}/api/client{path}",
        json=body,
        headers={"Authorization": f"Bearer {site.secret_key}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_a_template_preview_renders_sandboxed_and_the_chart_loads(page: Any, site: Site) -> None:
    _post(
        site, "/providers", {"type": "logger", "name": "log", "group": "email", "is_default": True}
    )
    campaign = _post(site, "/campaigns", {"type": "trigger", "name": "Welcome", "channel": "email"})
    template = _post(
        site,
        "/templates",
        {
            "campaign_id": campaign["id"],
            "locale": "en",
            "data": {
                "from": {"name": "Shop", "address": "shop@example.com"},
                "subject": "Hello",
                "html": '<p class="hi" style="color: rgb(255, 0, 0)">Hi {{ user.first_name '
                "| default: 'friend' }}</p><script>document.title = 'ran'; alert(1)</script>",
            },
        },
    )
    site.send("/api/client/events", [{"name": "Viewed", "external_id": "v1"}])
    site.drained()
    dialogs: list[str] = []
    blocked: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text)
            if "Content Security Policy" in message.text and "frame" in message.text
            else None
        ),
    )
    sign_in(page, site)
    page.goto(
        f"{site.url}/admin/p/{site.project_id}/campaigns/{campaign['id']}/templates/{template['id']}"
    )
    assert page.locator("iframe.preview").get_attribute("sandbox") == ""
    paragraph = page.frame_locator("iframe.preview").locator("p.hi")
    assert paragraph.inner_text() == "Hi friend"
    assert paragraph.evaluate("e => getComputedStyle(e).color") == "rgb(255, 0, 0)"
    assert paragraph.evaluate("e => e.ownerDocument.title") != "ran"  # the script did not run
    assert dialogs == [] and blocked == []
    page.click("nav.side >> text=Reports")
    assert page.locator("h1").inner_text() == "Reports"
    chart = page.locator("img.chart")
    chart.scroll_into_view_if_needed()
    # A function with the element, not an expression: polling an expression evaluates a
    # string, which the admin's Content-Security-Policy (no 'unsafe-eval') refuses.
    page.wait_for_function("img => img.complete", arg=chart.element_handle())
    assert chart.evaluate("e => e.naturalWidth") > 0
