"""The rule builder, the report charts and the Team page in Debian's chromium."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.browser.admin.conftest import EMAIL, Site, sign_in

XSS = '<img src=x onerror=alert("xss")>'


def _count(page: Any) -> str:
    found = page.wait_for_selector('#rule-check[aria-busy="false"] [data-count]')
    return str(found.get_attribute("data-count"))


def _wait_count(page: Any, expected: str) -> None:
    page.wait_for_function(
        "n => { const c = document.querySelector('#rule-check[aria-busy=\"false\"] [data-count]');"
        " return c && c.getAttribute('data-count') === n; }",
        arg=expected,
    )


def test_build_a_rule_with_the_builder_and_see_the_count(page: Any, site: Site) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    for n, tier in enumerate(["gold", "gold", "tin", "lead"]):
        site.send(
            "/api/client/identify",
            {"external_id": f"b{n}", "data": {"tier": tier, "visits": n, XSS: "x"}},
        )
    site.drained()
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/lists/new")
    page.fill("#f-name", "Gold or tin")
    assert page.locator("#f-rule").is_hidden()  # the builder is the first view
    rows = page.locator(".rule-row")
    assert rows.count() == 1  # the example condition, drawn
    # The schema's paths are offered, with their types.
    offered = page.locator("#rule-paths option").evaluate_all("o => o.map(x => x.value)")
    assert "data.tier" in offered and "data.visits" in offered and f"data.{XSS}" in offered
    rows.nth(0).locator(".rule-path").fill("data.tier")
    rows.nth(0).locator(".rule-operator").select_option("=")
    rows.nth(0).locator(".rule-value").fill("gold")
    _wait_count(page, "2")
    page.locator(".rule-combinator").first.select_option("or")
    page.click("button[data-add=condition]")
    rows.nth(1).locator(".rule-path").fill("data.tier")
    rows.nth(1).locator(".rule-operator").select_option("=")
    rows.nth(1).locator(".rule-value").fill("tin")
    _wait_count(page, "3")
    # A number path switches the row to number operators; a group nests.
    page.click("button[data-add=group]")
    nested = page.locator(".rule-group.nested .rule-row").nth(0)
    nested.locator(".rule-path").fill("data.visits")
    assert nested.locator(".rule-type").input_value() == "number"
    nested.locator(".rule-operator").select_option(">=")
    nested.locator(".rule-value").fill("3")
    _wait_count(page, "4")
    # The JSON view holds the same rule, as the API takes it.
    page.click("text=JSON (advanced)")
    rule = json.loads(page.locator("#f-rule").input_value())
    assert rule == {
        "type": "wrapper",
        "group": "parent",
        "operator": "or",
        "children": [
            {
                "type": "string",
                "group": "user",
                "path": "data.tier",
                "operator": "=",
                "value": "gold",
            },
            {
                "type": "string",
                "group": "user",
                "path": "data.tier",
                "operator": "=",
                "value": "tin",
            },
            {
                "type": "wrapper",
                "group": "parent",
                "operator": "and",
                "children": [
                    {
                        "type": "number",
                        "group": "user",
                        "path": "data.visits",
                        "operator": ">=",
                        "value": 3,
                    }
                ],
            },
        ],
    }
    # Back in the builder, removing the nested group: the count follows.
    page.click("text=Builder")
    page.click("text=Remove group")
    _wait_count(page, "3")
    # A value the rule refuses is shown at the condition it concerns.
    rows.nth(0).locator(".rule-type").select_option("number")
    rows.nth(0).locator(".rule-value").fill("lots")
    page.wait_for_selector('#rule-check[aria-busy="false"] .errors')
    assert "rule.children[0].value" in page.locator("#rule-check").inner_text()
    rows.nth(0).locator(".rule-type").select_option("string")
    rows.nth(0).locator(".rule-value").fill("gold")
    _wait_count(page, "3")
    page.click("text=Create list")
    assert page.locator("h1").inner_text() == "Gold or tin"
    # Editing it again opens the builder on the saved rule.
    page.goto(page.url + "/edit")
    assert page.locator(".rule-row").count() == 2
    assert page.locator(".rule-value").nth(1).input_value() == "tin"
    assert _count(page) == "3"
    assert dialogs == []


def test_a_rule_the_builder_cannot_draw_stays_in_the_json_view(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/lists/new")
    page.click("text=JSON (advanced)")
    event_rule = {
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "value": "Bought",
        "operator": "and",
        "children": [],
    }
    page.fill("#f-rule", json.dumps(event_rule))
    page.click("text=Builder")
    assert page.locator("#f-rule").is_visible()
    assert "does not draw" in page.locator(".rule-views-note").inner_text()
    assert json.loads(page.locator("#f-rule").input_value()) == event_rule  # untouched


def _loaded(page: Any, selector: str) -> bool:
    """The image arrived and decoded (an SVG the browser could not read has no width)."""
    image = page.wait_for_selector(selector)
    page.wait_for_function("img => img.complete", arg=image)
    return bool(page.evaluate("img => img.naturalWidth > 0", image))


def test_see_the_charts_on_the_reports_page(page: Any, site: Site) -> None:
    site.send("/api/client/identify", {"external_id": "r1", "data": {"tier": "gold"}})
    site.send("/api/client/events", [{"name": "Charted", "external_id": "r1"}] * 3)
    site.drained()
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/lists/new")
    page.fill("#f-name", "Imported")
    page.check("input[value=static]")
    page.click("text=Create list")
    page.fill("#csv-text", "external_id\nr1\n")
    page.click("button:has-text('Import')")
    page.wait_for_selector(".notice")
    page.click("nav.side >> text=Reports")
    assert _loaded(page, "#per-day img.chart")
    assert "1 member" in page.locator("#list-growth").inner_text()
    assert _loaded(page, "#list-growth img.chart")
    assert "no journeys yet" in page.locator("#journey-conversion").inner_text()


def test_invite_a_team_member_who_signs_in_and_changes_the_password(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.click("nav.side >> text=Team")
    assert EMAIL in page.locator("table").inner_text()
    page.fill("#f-email", "newcomer@example.com")
    page.select_option("#f-role", "editor")
    page.click("button:has-text('Invite')")
    password = page.locator("#new-password").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", password)
    assert "newcomer@example.com" in page.locator("table").inner_text()
    page.click("text=Sign out")
    page.fill("#f-email", "newcomer@example.com")
    page.fill("#f-password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/admin/p/{site.project_id}/users")
    assert "· editor" in page.locator("header").inner_text()
    assert page.locator("nav.side >> text=Team").count() == 0
    page.click("header >> text=newcomer@example.com")
    page.fill("#f-current", password)
    page.fill("#f-new", "my own good password")
    page.fill("#f-again", "my own good password")
    page.click("button:has-text('Change password')")
    assert "Password changed." in page.locator(".notice").inner_text()
