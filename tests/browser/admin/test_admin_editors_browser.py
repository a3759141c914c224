"""The admin's editors in Debian's chromium: a journey's steps edited (problems at their
step while typing, the graph redrawn on save), a user simulated, a template previewed live
in its sandboxed frame where a script does not run."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.browser.admin.conftest import Site, sign_in


def _api(site: Site, method: str, path: str, body: Any) -> Any:
    response = httpx.request(
        method,
        f"{site.url}/api/client{path}",
        json=body,
        headers={"Authorization": f"Bearer {site.secret_key}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def _steps(gate_name: str) -> dict[str, Any]:
    return {
        "in": {
            "type": "entrance",
            "name": "Signed up",
            "data": {"trigger": "event", "event_name": "Signed Up"},
            "children": [{"external_id": "gate"}],
        },
        "gate": {
            "type": "gate",
            "name": gate_name,
            "data": {
                "rule": {
                    "type": "string",
                    "group": "user",
                    "path": "data.plan",
                    "operator": "=",
                    "value": "pro",
                }
            },
            "children": [
                {"external_id": "bye", "path": "yes"},
                {"external_id": "bye", "path": "no"},
            ],
        },
        "bye": {"type": "exit", "name": "Done", "data": {}},
    }


def test_edit_a_journeys_steps_and_see_the_graph_change(page: Any, site: Site) -> None:
    journey = _api(site, "POST", "/journeys", {"name": "Browser journey"})
    _api(site, "PUT", f"/journeys/{journey['id']}/steps", _steps("Pro?"))
    sign_in(page, site)
    base = f"{site.url}/admin/p/{site.project_id}/journeys/{journey['id']}"
    page.goto(base)
    assert page.locator("svg.journey-graph g.step").count() == 3
    page.click("text=Edit steps")
    editor = page.locator("#f-steps")
    broken = _steps("Pro?")
    broken["gate"]["children"] = [{"external_id": "missing"}]
    editor.fill(json.dumps(broken, indent=2))
    problem = page.wait_for_selector('#steps-check[aria-busy="false"] li[data-step="gate"]')
    assert "no step 'missing' in this graph" in problem.inner_text()
    assert "(line " in problem.inner_text()
    changed = _steps("Is a pro?")
    changed["gate"]["children"][0] = {"external_id": "wait", "path": "yes"}
    changed["wait"] = {
        "type": "delay",
        "name": "Two days",
        "data": {"format": "duration", "duration": {"days": 2}},
        "children": [{"external_id": "bye"}],
    }
    editor.fill(json.dumps(changed, indent=2))
    page.wait_for_selector('#steps-check[aria-busy="false"] p.ok')
    page.click("#journey-form button[type=submit]")
    page.wait_for_url(f"{base}/edit?done=saved")
    graph = page.locator("svg.journey-graph")
    assert graph.locator("g.step").count() == 4
    assert graph.locator('g[data-step="wait"] text.step-name').text_content() == "Two days"
    assert graph.locator('g[data-step="gate"] text.step-name').text_content() == "Is a pro?"
    page.goto(base)
    assert page.locator("svg.journey-graph g.step").count() == 4


def test_simulate_a_user(page: Any, site: Site) -> None:
    journey = _api(site, "POST", "/journeys", {"name": "Simulated"})
    _api(site, "PUT", f"/journeys/{journey['id']}/steps", _steps("Pro?"))
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/journeys/{journey['id']}")
    page.click("text=Simulate a user")
    page.fill("#f-external_id", "someone-new")
    page.fill("#f-events", '[{"name": "Signed Up", "at": 60}]')
    page.fill("#f-traits", '{"plan": "pro"}')
    page.click("#simulate-form button[type=submit]")
    rows = page.locator("#simulation tr[data-step]")
    assert [rows.nth(i).get_attribute("data-step") for i in range(rows.count())] == [
        "in",
        "gate",
        "bye",
    ]
    assert rows.nth(1).locator("td").nth(4).inner_text() == "yes"  # a pro: the gate's yes
    assert page.locator("svg.journey-graph g.step-visited").count() == 3


def test_preview_a_template_live_in_a_sandboxed_frame(page: Any, site: Site) -> None:
    campaign = _api(
        site, "POST", "/campaigns", {"type": "trigger", "name": "Live preview", "channel": "email"}
    )
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, site)
    page.goto(f"{site.url}/admin/p/{site.project_id}/campaigns/{campaign['id']}")
    page.fill("#f-new-locale", "en")
    page.click("text=Add template")
    frame_element = page.locator("iframe#preview-frame")
    assert frame_element.get_attribute("sandbox") == ""
    page.fill("#f-from\\.address", "shop@example.com")
    page.fill("#f-subject", "Hello {{ user.first_name | default: 'you' }}")
    page.fill(
        "#f-body",
        '<p class="hi" style="color: rgb(0, 128, 0)">Hi {{ user.first_name | default: "friend" }}'
        "</p><script>document.title = 'ran'; alert(1)</script>"
        '<form action="https://example.com"><button id="go">Go</button></form>',
    )
    page.wait_for_selector('[data-summary="subject"]:text("Hello you")')
    paragraph = page.frame_locator("iframe#preview-frame").locator("p.hi")
    paragraph.wait_for()
    assert paragraph.inner_text() == "Hi friend"
    assert paragraph.evaluate("e => getComputedStyle(e).color") == "rgb(0, 128, 0)"
    assert paragraph.evaluate("e => e.ownerDocument.title") != "ran"  # the script did not run
    assert dialogs == []
    # A Liquid error shows at its field, with its line and column.
    page.fill("#f-subject", "Hello {% if %}")
    error = page.wait_for_selector('#e-subject:text("Liquid syntax error at line 1")')
    assert "column" in error.inner_text()
    page.fill("#f-subject", "Welcome")
    page.wait_for_selector("#e-subject:empty", state="attached")
    page.click("#template-form button.primary")
    page.wait_for_selector("text=Saved.")
    assert page.locator("#f-subject").input_value() == "Welcome"
    assert page.locator("iframe#preview-frame").get_attribute("sandbox") == ""
    assert dialogs == []
