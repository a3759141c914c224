"""Simulating a user in the admin: the form runs the journeys' dry run and shows the path
and the messages it would send; nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.admin.conftest import csrf_of
from tests.admin.test_escaping import PAYLOADS
from tests.admin.test_journey_editor import _journey, assert_text_only
from tests.admin.test_journey_pages import _as as as_role
from tests.conftest import Project
from tests.messaging.helpers import trigger_campaign
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.store.tables_journeys import journey_entrances


def steps(campaign_id: int) -> dict[str, Any]:
    return {
        "in": {
            "type": "entrance",
            "name": "Signed up",
            "data": {"trigger": "event", "event_name": "Signed Up"},
            "children": [{"external_id": "wait"}],
        },
        "wait": {
            "type": "wait",
            "name": "Bought within a day?",
            "data": {"event_name": "Purchased", "timeout": {"days": 1}},
            "children": [
                {"external_id": "thanks", "path": "yes"},
                {"external_id": "bye", "path": "no"},
            ],
        },
        "thanks": {
            "type": "action",
            "name": "Thank-you email",
            "data": {"campaign_id": campaign_id},
            "children": [{"external_id": "bye"}],
        },
        "bye": {"type": "exit", "name": "Done", "data": {}},
    }


async def _simulate(browser: httpx.AsyncClient, url: str, **fields: str) -> httpx.Response:
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    return await browser.post(url, data={"csrf": csrf_of(page.text), **fields})


async def test_simulate_shows_the_path_and_the_messages_it_would_send(
    services: Services,
    project: Project,
    client: httpx.AsyncClient,
    new_client: Callable[[], httpx.AsyncClient],
) -> None:
    campaign = await trigger_campaign(client, project, live=False)
    journey_id = _journey(services, project, steps(campaign["id"]))
    url = f"/admin/p/{project.id}/journeys/{journey_id}/simulate"
    support = await as_role(services, new_client, Role.SUPPORT, project.id)  # may simulate
    events = [
        {"name": "Signed Up", "at": 0},
        {"name": "Purchased", "at": 3600, "data": {"total": 20}},
    ]
    shown = await _simulate(
        support,
        url,
        external_id="imagined",
        events=json.dumps(events),
        traits='{"first_name": "Ann"}',
    )
    assert shown.status_code == 200, shown.text
    result = shown.text[shown.text.index('id="simulation"') :]
    rows = result.split('<tr data-step="')[1:]
    assert [r.split('"', 1)[0] for r in rows] == ["in", "wait", "thanks", "bye"]
    assert "<td>Bought within a day?</td>" in result and "<td>Thank-you email</td>" in result
    [message] = result.split('<tr class="message">')[1:]
    assert f'/campaigns/{campaign["id"]}">Welcome</a>' in message
    assert "Thank-you email" in message
    # The path is marked on the graph.
    assert 'class="step step-action step-visited" data-step="thanks"' in shown.text
    # Without the purchase: the wait times out and no message goes.
    timed_out = await _simulate(
        support, url, external_id="imagined", events='[{"name": "Signed Up"}]', traits="{}"
    )
    result = timed_out.text[timed_out.text.index('id="simulation"') :]
    assert [r.split('"', 1)[0] for r in result.split('<tr data-step="')[1:]] == [
        "in",
        "wait",
        "bye",
    ]
    assert 'id="no-messages"' in result
    # No entrance takes other events.
    other = await _simulate(
        support, url, external_id="x", events='[{"name": "Other"}]', traits="{}"
    )
    assert 'id="not-entered"' in other.text
    with services.db.reader.connect() as conn:  # a dry run writes nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(journey_entrances)).scalar() == 0


async def test_bad_simulation_input_is_shown_at_its_field_and_csrf_is_needed(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    journey_id = _journey(services, project, steps(1))
    url = f"/admin/p/{project.id}/journeys/{journey_id}/simulate"
    unknown = await _simulate(owner, url, external_id="nobody", events="[]", traits="")
    assert unknown.status_code == 400
    assert (
        "No user with external_id &#39;nobody&#39;. Give traits to imagine this user."
        in unknown.text
    )
    broken = await _simulate(owner, url, external_id="x", events="[{", traits="")
    assert broken.status_code == 400 and "Not valid JSON at line 1, column 3" in broken.text
    unnamed = await _simulate(owner, url, external_id="x", events='[{"at": 5}]', traits="{}")
    assert unnamed.status_code == 400 and "events[0].name: needs a name" in unnamed.text
    not_list = await _simulate(owner, url, external_id="x", events='{"a": 1}', traits="[1]")
    assert "A JSON list of events" in not_list.text and "A JSON object of traits" in not_list.text
    no_id = await _simulate(owner, url, external_id=" ", events="[]", traits="")
    assert no_id.status_code == 400 and "Give the external id of a user" in no_id.text
    refused = await owner.post(url, data={"external_id": "x", "events": "[]", "traits": "{}"})
    assert refused.status_code == 403 and "CSRF" in refused.text


async def test_payloads_in_simulated_events_stay_text(
    owner: httpx.AsyncClient, services: Services, project: Project
) -> None:
    graph = steps(1)
    graph["in"]["data"]["event_name"] = PAYLOADS[0]
    graph["thanks"]["name"] = PAYLOADS[1]
    journey_id = _journey(services, project, graph, name=PAYLOADS[2])
    url = f"/admin/p/{project.id}/journeys/{journey_id}/simulate"
    events = [{"name": PAYLOADS[0]}, {"name": "Purchased", "at": 5}]
    shown = await _simulate(
        owner, url, external_id=PAYLOADS[2], events=json.dumps(events), traits="{}"
    )
    assert shown.status_code == 200 and 'data-step="thanks"' in shown.text
    assert_text_only(shown.text)
