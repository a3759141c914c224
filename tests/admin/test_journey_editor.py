"""Building journeys in the admin: create one, edit its steps as JSON with problems shown
at their step, archive it; roles, CSRF, and payloads in names that stay text."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS
from tests.admin.test_journey_pages import _as as as_role
from tests.conftest import Project
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.journeys import parse_steps
from tidings.journeys.store import JourneyStore

SCRIPTS = {
    '<script src="/admin/static/admin.js" defer>',
    '<script src="/admin/static/editors.js" defer>',
}


def assert_text_only(html: str) -> None:
    """No payload is markup: only the admin's own scripts, every payload escaped."""
    for payload in PAYLOADS:
        assert payload not in html
    assert "<img src=x" not in html and "<svg onload" not in html and "<script>alert" not in html
    assert set(re.findall(r"<script[^>]*>", html)) <= SCRIPTS


def _store(services: Services) -> JourneyStore:
    assert services.journey_store is not None
    return services.journey_store


def graph(gate_name: str = "Bought?", *, with_rule: bool = True) -> dict[str, Any]:
    gate: dict[str, Any] = {
        "type": "gate",
        "name": gate_name,
        "data": {
            "rule": {
                "type": "wrapper",
                "group": "event",
                "path": "name",
                "value": "Purchased",
                "operator": "and",
                "children": [],
            }
        }
        if with_rule
        else {},
        "children": [{"external_id": "bye", "path": "yes"}, {"external_id": "bye", "path": "no"}],
    }
    return {
        "in": {
            "type": "entrance",
            "data": {"trigger": "none"},
            "children": [{"external_id": "gate"}],
        },
        "gate": gate,
        "bye": {"type": "exit", "name": "Goodbye", "data": {}},
    }


def _journey(
    services: Services, project: Project, steps: dict[str, Any] | None, **values: Any
) -> int:
    fields: dict[str, Any] = {"name": "Welcome", "description": None, "tags": [], "settings": {}}
    fields.update(values)
    row = _store(services).create(project.id, now=1, **fields)
    if steps is not None:
        _store(services).put_steps(project.id, row.id, parse_steps(steps), now=2)
    return row.id


async def _edit(browser: httpx.AsyncClient, url: str, **fields: str) -> httpx.Response:
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    form = {
        "csrf": csrf_of(page.text),
        "name": "Welcome",
        "description": "",
        "tags": "",
        **fields,
    }
    return await browser.post(url, data=form)


async def test_an_editor_creates_a_journey_and_its_example_steps(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    listing = await editor.get(f"/admin/p/{project.id}/journeys")
    assert f'href="/admin/p/{project.id}/journeys/new">New journey</a>' in listing.text
    form = await editor.get(f"/admin/p/{project.id}/journeys/new")
    assert form.status_code == 200
    empty = await editor.post(
        f"/admin/p/{project.id}/journeys/new", data={"csrf": csrf_of(form.text), "name": " "}
    )
    assert empty.status_code == 400 and "A journey needs a name." in empty.text
    made = await editor.post(
        f"/admin/p/{project.id}/journeys/new",
        data={"csrf": csrf_of(form.text), "name": "Onboarding", "tags": "new, new, trial"},
    )
    assert made.status_code == 303
    [row] = _store(services).page(project.id, limit=5, cursor=None)[0]
    assert (row.name, row.tags, row.status) == ("Onboarding", ["new", "trial"], "draft")
    assert made.headers["location"] == f"/admin/p/{project.id}/journeys/{row.id}/edit?done=created"
    page = await editor.get(made.headers["location"])
    assert "Journey created: edit its steps." in page.text
    assert set(_store(services).steps(row.id)) == {"entry", "wait-a-day", "done"}
    assert "&#34;wait-a-day&#34;" in page.text  # the graph in the editor, as JSON
    assert page.text.count("<rect ") == 3
    assert 'id="publish-ok"' in page.text  # the example can go live as it is


async def test_support_cannot_create_or_edit_and_forms_need_the_csrf_token(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    journey_id = _journey(services, project, graph())
    base = f"/admin/p/{project.id}/journeys"
    support = await as_role(services, new_client, Role.SUPPORT, project.id)
    page = await support.get(f"{base}/{journey_id}")
    assert (
        page.status_code == 200 and "Edit steps" not in page.text and "New journey" not in page.text
    )
    token = csrf_of(page.text)
    for path in ("/new", f"/{journey_id}/edit"):
        assert (await support.get(base + path)).status_code == 403
        refused = await support.post(base + path, data={"csrf": token, "name": "x", "steps": "{}"})
        assert refused.status_code == 403 and "yours is support" in refused.text
    checked = await support.post(
        f"{base}/{journey_id}/check", json={"steps": "{}"}, headers={"X-CSRF-Token": token}
    )
    assert checked.status_code == 403 and checked.json()["error"] == "Not allowed"
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    form = await editor.get(f"{base}/{journey_id}/edit")
    forged = await editor.post(
        f"{base}/{journey_id}/edit",
        data={"csrf": "forged", "name": "Changed", "steps": json.dumps(graph("Changed"))},
    )
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert (await editor.post(f"{base}/new", data={"name": "No token"})).status_code == 403
    no_header = await editor.post(f"{base}/{journey_id}/check", json={"steps": "{}"})
    assert no_header.status_code == 403
    assert _store(services).get(project.id, journey_id).name == "Welcome"  # type: ignore[union-attr]
    assert len(_store(services).page(project.id, limit=5, cursor=None)[0]) == 1
    assert "Save</button>" in form.text


async def test_saving_new_steps_changes_the_graph(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, graph())
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    before = await owner.get(url)
    assert before.text.count("<rect ") == 3
    steps = graph("Paid?")
    steps["gate"]["children"][0] = {"external_id": "thanks", "path": "yes"}
    steps["thanks"] = {
        "type": "delay",
        "name": "A day later",
        "data": {"format": "duration", "duration": {"days": 1}},
        "children": [{"external_id": "bye"}],
    }
    saved = await _edit(owner, f"{url}/edit", name="Renamed", tags="a, b", steps=json.dumps(steps))
    assert saved.status_code == 303 and saved.headers["location"] == f"{url}/edit?done=saved"
    assert set(_store(services).steps(journey_id)) == {"in", "gate", "thanks", "bye"}
    row = _store(services).get(project.id, journey_id)
    assert row is not None and (row.name, row.tags) == ("Renamed", ["a", "b"])
    after = await owner.get(url)
    svg = after.text[after.text.index("<svg") : after.text.index("</svg>")]
    assert svg.count("<rect ") == 4 and ">A day later</text>" in svg and ">Paid?</text>" in svg
    assert svg.count("<line ") == 4  # in→gate, gate→thanks (yes), gate→bye (no), thanks→bye


async def test_steps_that_do_not_parse_are_shown_at_their_step_and_nothing_is_saved(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, graph())
    url = f"/admin/p/{project.id}/journeys/{journey_id}/edit"
    broken = await _edit(owner, url, steps='{"in": {"type": "entrance",,}}')
    assert broken.status_code == 400
    assert "Not valid JSON at line 1, column 28" in broken.text
    assert "Nothing was saved" in broken.text
    steps = graph()
    steps["gate"]["type"] = "teleport"
    steps["bye"]["children"] = [{"external_id": "nowhere"}]
    text = json.dumps(steps, indent=2)
    wrong = await _edit(owner, url, name="Changed", steps=text)
    assert wrong.status_code == 400
    assert 'id="steps-errors"' in wrong.text
    gate_line = text.splitlines().index('  "gate": {') + 1
    bye_line = text.splitlines().index('  "bye": {') + 1
    assert re.search(rf'data-step="gate">Step <code>gate</code> \(line {gate_line}\):', wrong.text)
    assert "<code>.type</code> must be one of entrance" in wrong.text
    assert re.search(rf'data-step="bye">Step <code>bye</code> \(line {bye_line}\):', wrong.text)
    assert "no step &#39;nowhere&#39; in this graph" in wrong.text
    assert "teleport" in wrong.text  # the text typed is kept in the editor
    stored = _store(services).steps(journey_id)
    assert stored["gate"].type == "gate" and not stored["bye"].children
    assert _store(services).get(project.id, journey_id).name == "Welcome"  # type: ignore[union-attr]


async def test_a_draft_saves_with_what_stops_it_going_live_and_a_live_one_refuses(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, graph())
    base = f"/admin/p/{project.id}/journeys/{journey_id}"
    saved = await _edit(owner, f"{base}/edit", steps=json.dumps(graph(with_rule=False)))
    assert saved.status_code == 303
    page = await owner.get(saved.headers["location"])
    assert "Before it can go live" in page.text
    assert 'data-step="gate">Step <code>gate</code>' in page.text
    assert "<code>.data.rule</code> is required" in page.text
    assert 'class="step step-gate step-invalid" data-step="gate"' in page.text
    journey_page = await owner.get(base)
    assert 'class="step step-gate step-invalid"' in journey_page.text  # marked there too
    refused = await owner.post(f"{base}/publish", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 409
    # Fixed, published: a live graph must stay publishable.
    assert (await _edit(owner, f"{base}/edit", steps=json.dumps(graph()))).status_code == 303
    assert (
        await owner.post(f"{base}/publish", data={"csrf": csrf_of(page.text)})
    ).status_code == 303
    live = await _edit(
        owner, f"{base}/edit", steps=json.dumps(graph("Removed rule", with_rule=False))
    )
    assert live.status_code == 400
    assert "A live journey&#39;s graph must stay able to run: nothing was saved." in live.text
    assert 'data-step="gate">Step <code>gate</code>' in live.text
    assert _store(services).steps(journey_id)["gate"].name == "Bought?"


async def test_the_live_check_answers_per_step(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, graph())
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    token = csrf_of((await owner.get(url)).text)
    headers = {"X-CSRF-Token": token}
    steps = graph(with_rule=False)
    text = json.dumps(steps, indent=2)
    answer = (await owner.post(f"{url}/check", json={"steps": text}, headers=headers)).json()
    assert answer["valid"] is True and answer["steps"] == 3
    assert answer["errors"] == {"general": [], "steps": []}
    [gate] = answer["publish"]["steps"]
    assert gate["uuid"] == "gate" and gate["line"] == text.splitlines().index('  "gate": {') + 1
    assert gate["errors"] == [{"param": "gate.data.rule", "message": "is required"}]
    bad = (await owner.post(f"{url}/check", json={"steps": "[1"}, headers=headers)).json()
    assert (
        bad["valid"] is False
        and "Not valid JSON at line 1" in bad["errors"]["general"][0]["message"]
    )
    shape = await owner.post(f"{url}/check", json={"steps": 5}, headers=headers)
    assert shape.status_code == 400 and shape.json()["error"] == "Bad request"


async def test_archive_needs_the_publisher_role_and_stops_a_live_journey(
    services: Services, project: Project, new_client: Callable[[], httpx.AsyncClient]
) -> None:
    journey_id = _journey(services, project, graph())
    _store(services).update(project.id, journey_id, now=3, values={}, status="live")
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    editor = await as_role(services, new_client, Role.EDITOR, project.id)
    page = await editor.get(url)
    assert ">Archive</button>" not in page.text
    assert (
        await editor.post(f"{url}/archive", data={"csrf": csrf_of(page.text)})
    ).status_code == 403
    publisher = await as_role(services, new_client, Role.PUBLISHER, project.id)
    page = await publisher.get(url)
    assert ">Archive</button>" in page.text
    assert (await publisher.post(f"{url}/archive", data={})).status_code == 403  # no token
    done = await publisher.post(f"{url}/archive", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == f"{url}?done=archived"
    row = _store(services).get(project.id, journey_id)
    assert row is not None and row.archived and row.status == "off"
    archived = await publisher.get(done.headers["location"])
    assert "The journey is archived (and stopped)." in archived.text
    assert ">Publish</button>" not in archived.text and ">Resume</button>" not in archived.text
    back = await publisher.post(f"{url}/unarchive", data={"csrf": csrf_of(archived.text)})
    assert back.status_code == 303
    assert not _store(services).get(project.id, journey_id).archived  # type: ignore[union-attr]


async def test_payloads_in_journey_and_step_names_stay_text_in_the_editor(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    steps = graph(PAYLOADS[2])
    steps[PAYLOADS[0]] = {"type": "exit", "name": PAYLOADS[1], "data": {}}
    steps["gate"]["children"][1] = {"external_id": PAYLOADS[0], "path": "no"}
    journey_id = _journey(services, project, steps, name=PAYLOADS[1], tags=[PAYLOADS[0]])
    base = f"/admin/p/{project.id}/journeys/{journey_id}"
    for path in ("", "/edit", "/simulate"):
        page = await owner.get(base + path)
        assert page.status_code == 200, path
        assert_text_only(page.text)
    editor = await owner.get(f"{base}/edit")
    assert "&lt;/textarea&gt;&lt;svg onload=alert(2)&gt;" in editor.text
    steps["gate"]["type"] = "bogus"
    refused = await _edit(owner, f"{base}/edit", name=PAYLOADS[2], steps=json.dumps(steps))
    assert refused.status_code == 400
    assert_text_only(refused.text)
