"""The admin UI in Debian's chromium: what a person at the keyboard sees and does."""

from __future__ import annotations

import json
from typing import Any

from tests.browser.admin.conftest import EMAIL, Site, sign_in

XSS = '<img src=x onerror=alert("xss")>'


def test_sign_in_lands_on_the_users_page(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.wait_for_url(f"{site.url}/admin/p/{site.project_id}/users")
    assert page.locator("h1").inner_text() == "Users"
    assert EMAIL in page.locator("header").inner_text()


def test_a_wrong_password_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site, password="not the right one")
    assert page.locator(".notice.error").inner_text() == "Wrong email or password."
    assert page.url == f"{site.url}/admin/login"
    page.goto(f"{site.url}/admin/p/{site.project_id}/users")
    assert page.url.startswith(f"{site.url}/admin/login")  # still signed out


def test_create_a_key_shown_once(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.click("nav.side >> text=API keys")
    page.fill("#f-name", "Browser-made key")
    page.select_option("#f-scope", "secret")
    page.select_option("#f-role", "editor")
    page.click("text=Create key")
    key = page.locator("#new-key").inner_text()
    assert key.startswith("sk_")
    assert "Browser-made key" in page.locator("table").inner_text()
    page.goto(page.url)  # the page again: the key is not shown again
    assert page.locator("#new-key").count() == 0


def test_find_a_user_and_open_the_profile(page: Any, site: Site) -> None:
    site.send(
        "/api/client/identify",
        {"external_id": "grace", "email": "grace@example.com", "data": {"plan": "pro"}},
    )
    site.send("/api/client/events", [{"name": "Compiled", "external_id": "grace"}])
    site.drained()
    sign_in(page, site)
    page.fill("#q", "grac")
    page.keyboard.press("Enter")
    page.click("table >> text=grace")
    assert page.locator("h1").inner_text() == "grace"
    assert "pro" in page.locator("#traits").inner_text()
    assert "Compiled" in page.locator("#timeline").inner_text()


def test_build_a_dynamic_list_and_see_its_count(page: Any, site: Site) -> None:
    for n, plan in enumerate(["gold", "gold", "tin"]):
        site.send("/api/client/identify", {"external_id": f"m{n}", "data": {"tier": plan}})
    site.drained()
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/lists/new")
    page.fill("#f-name", "Gold tier")
    page.click("text=JSON (advanced)")  # the text editor (the builder has its own test)
    page.fill(
        "#f-rule", '{"type": "string", "group": "user", "path": "data.tier", "operator": "="}'
    )
    page.wait_for_selector('#rule-check[aria-busy="false"] .errors')  # no value: shown in place
    assert "rule.value" in page.locator("#rule-check").inner_text()
    rule = {
        "type": "string",
        "group": "user",
        "path": "data.tier",
        "operator": "=",
        "value": "gold",
    }
    page.fill("#f-rule", json.dumps(rule))
    count = page.wait_for_selector('#rule-check[aria-busy="false"] [data-count]')
    assert count.get_attribute("data-count") == "2"
    assert "2 of" in page.locator("#rule-check").inner_text()
    page.click("text=Create list")
    assert page.locator("h1").inner_text() == "Gold tier"
    assert "Dynamic list" in page.locator(".lede").inner_text()


def test_xss_payloads_stay_text(page: Any, site: Site) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    site.send("/api/client/identify", {"external_id": XSS, "data": {XSS: XSS}})
    site.send("/api/client/events", [{"name": XSS, "external_id": XSS, "data": {"x": XSS}}])
    site.drained()
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/users?q=%3Cimg")
    assert page.locator("table a").first.inner_text() == XSS
    page.locator("table a").first.click()
    assert page.locator("h1").inner_text() == XSS
    assert XSS in page.locator("#timeline").inner_text()
    page.goto(f"{site.url}/admin/p/{site.project_id}/events")
    # One more arrives while the stream is open: the script adds it as text too.
    site.send("/api/client/events", [{"name": XSS + " live", "external_id": XSS}])
    page.wait_for_selector(f"#stream td.event-name >> text={XSS} live")
    page.goto(f"{site.url}/admin/p/{site.project_id}/lists/new")
    page.fill("#f-name", XSS)
    page.check("input[value=static]")
    page.click("text=Create list")
    assert page.locator("h1").inner_text() == XSS
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


def test_a_form_without_its_csrf_token_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/settings")
    page.evaluate("document.querySelector('form.panel input[name=csrf]').remove()")
    page.fill("#f-name", "Renamed without a token")
    page.click("text=Save")
    assert page.locator("h1").inner_text() == "Form refused"
    page.goto(f"{site.url}/admin/p/{site.project_id}/settings")
    assert page.locator("#f-name").input_value() != "Renamed without a token"
