"""Journey pages: the list, the step graph as SVG with counts, publish and pause."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.admin.conftest import Clock, csrf_of, make_account, sign_in
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.conftest import Project, bearer
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.journeys import parse_steps
from tidings.journeys.store import JourneyStore

RULE = {
    "type": "wrapper",
    "group": "event",
    "path": "name",
    "value": "Purchased",
    "operator": "and",
    "children": [],
}


def _graph(name: str = "Bought?") -> dict[str, Any]:
    return {
        "in": {
            "type": "entrance",
            "data": {"trigger": "none"},
            "children": [{"external_id": "gate"}],
        },
        "gate": {
            "type": "gate",
            "name": name,
            "data": {"rule": RULE},
            "children": [
                {"external_id": "wait", "path": "yes"},
                {"external_id": "wait", "path": "no"},
            ],
        },
        "wait": {
            "type": "delay",
            "data": {"format": "duration", "duration": {"seconds": 86400}},
            "children": [{"external_id": "out"}],
        },
        "out": {"type": "exit", "data": {}},
    }


def _store(services: Services) -> JourneyStore:
    assert services.journey_store is not None
    return services.journey_store


def _journey(
    services: Services, project: Project, graph: dict[str, Any] | None, **fields: Any
) -> int:
    store = _store(services)
    values: dict[str, Any] = {"name": "Welcome", "description": None, "tags": [], "settings": {}}
    values.update(fields)
    row = store.create(project.id, now=1, **values)
    if graph is not None:
        store.put_steps(project.id, row.id, parse_steps(graph), now=2)
    return row.id


async def _as(
    services: Services, new_client: Callable[[], httpx.AsyncClient], role: Role, pid: int
) -> httpx.AsyncClient:
    email = f"{role.name.lower()}@example.com"
    make_account(services, email, roles={pid: role})
    browser = new_client()
    assert (await sign_in(browser, email)).status_code == 303
    return browser


async def test_the_list_shows_journeys_and_the_nav_links_it(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    empty = await owner.get(f"/admin/p/{project.id}/journeys")
    assert empty.status_code == 200 and "No journeys yet." in empty.text
    assert f'href="/admin/p/{project.id}/journeys" aria-current="page">Journeys<' in empty.text
    first = _journey(services, project, None, name="Onboarding", tags=["new"])
    page = await owner.get(f"/admin/p/{project.id}/journeys")
    assert f'<a href="/admin/p/{project.id}/journeys/{first}">Onboarding</a>' in page.text
    assert "draft" in page.text and ">new<" in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_the_journey_page_draws_its_steps_with_counts_and_path_labels(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
) -> None:
    journey_id = _journey(services, project, _graph())
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    draft = await owner.get(url)
    assert draft.status_code == 200
    published = await owner.post(f"{url}/publish", data={"csrf": csrf_of(draft.text)})
    assert published.status_code == 303 and published.headers["location"] == f"{url}?done=live"
    assert _store(services).get(project.id, journey_id).status == "live"  # type: ignore[union-attr]
    entered = await client.post(
        f"/api/client/journeys/{journey_id}/trigger",
        json={"user": {"external_id": "ann"}},
        headers=bearer(project.sk),
    )
    assert entered.status_code < 300, entered.text
    page = await owner.get(published.headers["location"])
    assert "The journey is live." in page.text
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert svg.count("<rect ") == 4
    for kind in ("entrance", "gate", "delay", "exit"):
        assert re.search(rf'<text class="step-type" x="\d+" y="\d+">{kind}</text>', svg), kind
    assert ">Bought?</text>" in svg
    assert '<text class="edge-label yes"' in svg and '<text class="edge-label no"' in svg
    assert svg.count("<line ") == 4
    # ann went in, through the gate (no), and waits at the delay.
    assert re.search(r">1 in · 1 done · 0 wait</text>", svg), svg
    assert re.search(r">1 in · 0 done · 1 wait</text>", svg), svg
    assert ">Pause</button>" in page.text and ">Publish</button>" not in page.text


async def test_publish_and_pause_need_the_publisher_role_and_the_csrf_token(
    services: Services,
    project: Project,
    clock: Clock,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    journey_id = _journey(services, project, _graph())
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    for role in (Role.SUPPORT, Role.EDITOR):
        browser = await _as(services, new_client, role, project.id)
        page = await browser.get(url)
        assert page.status_code == 200 and "<svg" in page.text
        assert ">Publish</button>" not in page.text
        refused = await browser.post(f"{url}/publish", data={"csrf": csrf_of(page.text)})
        assert refused.status_code == 403 and f"yours is {role.name.lower()}" in refused.text
    publisher = await _as(services, new_client, Role.PUBLISHER, project.id)
    page = await publisher.get(url)
    assert ">Publish</button>" in page.text
    forged = await publisher.post(f"{url}/publish", data={"csrf": "nope"})
    assert forged.status_code == 403
    assert _store(services).get(project.id, journey_id).status == "draft"  # type: ignore[union-attr]
    token = csrf_of(page.text)
    assert (await publisher.post(f"{url}/publish", data={"csrf": token})).status_code == 303
    paused = await publisher.post(f"{url}/pause", data={"csrf": token})
    assert paused.headers["location"] == f"{url}?done=off"
    assert _store(services).get(project.id, journey_id).status == "off"  # type: ignore[union-attr]
    resumed = await publisher.get(paused.headers["location"])
    assert "The journey is paused." in resumed.text and ">Resume</button>" in resumed.text


async def test_a_journey_that_cannot_go_live_says_why_and_stays_a_draft(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, None)
    url = f"/admin/p/{project.id}/journeys/{journey_id}"
    page = await owner.get(url)
    assert "This journey has no steps yet" in page.text
    refused = await owner.post(f"{url}/publish", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 409
    assert "The journey cannot go live" in refused.text
    assert _store(services).get(project.id, journey_id).status == "draft"  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["/journeys/999", "/journeys/abc", "/journeys/1/publish"])
async def test_unknown_journeys_are_not_found(
    owner: httpx.AsyncClient, services: Services, project: Project, path: str
) -> None:
    page = await owner.get(f"/admin/p/{project.id}/journeys")
    if path.endswith("publish"):
        response = await owner.post(
            f"/admin/p/{project.id}/journeys/999/publish", data={"csrf": csrf_of(page.text)}
        )
    else:
        response = await owner.get(f"/admin/p/{project.id}{path}")
    assert response.status_code == 404


async def test_payloads_in_journey_and_step_names_stay_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    bad = PAYLOADS[0]
    journey_id = _journey(
        services,
        project,
        _graph(name=PAYLOADS[2]),
        name=PAYLOADS[1],
        description=bad,
        tags=[PAYLOADS[2]],
    )
    for url in (
        f"/admin/p/{project.id}/journeys",
        f"/admin/p/{project.id}/journeys/{journey_id}",
    ):
        page = await owner.get(url)
        assert page.status_code == 200
        assert_inert(page.text)
    assert "&lt;/textarea&gt;&lt;svg onload" in page.text


def test_waiting_counts_seek_the_entrances_still_in_the_journey(
    services: Services, project: Project
) -> None:
    """The graph's "waiting now" per step counts the running and waiting entrances of the
    journey's current steps, each (step, state) pair read from its own range of the index:
    the entrances that left long ago are not read (a journey keeps every entrance)."""
    import sqlalchemy as sa

    from tidings.store.tables_journeys import journey_entrances

    journey_id = _journey(services, project, _graph())
    store = _store(services)
    ids = {step.uuid: step.id for step in store.steps(journey_id).values()}
    states = ["waiting"] * 3 + ["running"] * 2 + ["done"] * 4 + ["failed"]
    rows = [(ids["wait"], state) for state in states] + [(ids["gate"], "done")]
    rows.append((ids["wait"] + 1000, "waiting"))  # a step no longer in the journey
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.insert(journey_entrances),
            [
                {
                    "project_id": project.id,
                    "journey_id": journey_id,
                    "entrance_step_id": ids["in"],
                    "profile_id": f"p{n}",
                    "entrance_key": "",
                    "occurrence": "1",
                    "step_id": step_id,
                    "state": state,
                    "holdout": False,
                    "created_at": 1,
                    "updated_at": 1,
                }
                for n, (step_id, state) in enumerate(rows)
            ],
        )
    seen: list[tuple[str, Any]] = []

    def capture(conn: object, cursor: object, sql: str, params: Any, *_: object) -> None:
        if "FROM journey_entrances" in sql:
            seen.append((sql, params))

    engine = services.db.reader
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        stats = store.stats(journey_id)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert {uuid: counts["waiting"] for uuid, counts in stats.items()} == {
        "in": 0,
        "gate": 0,
        "wait": 5,
        "out": 0,
    }
    [(sql, params)] = seen
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            )
            assert "(journey_id=? AND step_id=? AND state=?)" in plan, plan
        else:  # a tiny table: forbid the sequential scan the planner would rather do
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
            assert "ix_journey_entrances_step" in plan and "step_id = ANY" in plan, plan
