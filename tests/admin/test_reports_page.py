"""The reports page: events per day over 30 days, from the rollups, as an SVG chart."""

from __future__ import annotations

import re
import time

import httpx
import sqlalchemy as sa

from tests.admin.conftest import Clock
from tests.admin.test_escaping import PAYLOADS, assert_inert
from tests.conftest import Project, bearer, drain
from tidings.admin.reports import DAY, DAYS
from tidings.bootstrap import Services
from tidings.reporting.queries import day_text
from tidings.store.tables import events


async def test_events_per_day_come_from_the_rollups_and_names_stay_text(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    clock: Clock,
) -> None:
    clock.now = time.time_ns() // 1000  # the events are dated now
    empty = await owner.get(f"/admin/p/{project.id}/reports")
    assert empty.status_code == 200 and f"No events in the last {DAYS} days." in empty.text
    assert f'href="/admin/p/{project.id}/reports" aria-current="page">Reports<' in empty.text
    sent = [{"name": "Viewed", "external_id": "u1"}] * 3 + [
        {"name": PAYLOADS[0], "external_id": "u2"}
    ]
    response = await client.post("/api/client/events", json=sent, headers=bearer(project.pk))
    assert response.status_code < 300, response.text
    await drain(services)
    # The page reads the rollups, not the events: with the events gone, the counts stay.
    with services.db.writer.begin() as conn:
        conn.execute(sa.delete(events).where(events.c.project_id == project.id))
    page = await owner.get(f"/admin/p/{project.id}/reports")
    assert page.status_code == 200
    assert "4 events in all; the busiest day had 4." in page.text
    assert '<td>Viewed</td><td class="num">3</td>' in page.text
    today = day_text(clock.now - clock.now % DAY)
    assert f'<tr><td>{today}</td><td class="num">4</td></tr>' in page.text
    assert len(re.findall(r"<tr><td>\d{4}-\d\d-\d\d</td>", page.text)) == DAYS
    assert f'<img class="chart" src="/admin/p/{project.id}/reports/events.svg"' in page.text
    assert_inert(page.text)


async def test_the_chart_is_an_svg_with_a_bar_per_day_and_its_own_policy(
    owner: httpx.AsyncClient,
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    clock: Clock,
) -> None:
    clock.now = time.time_ns() // 1000
    await client.post(
        "/api/client/events",
        json=[{"name": "Bought", "external_id": "u1"}] * 7,
        headers=bearer(project.pk),
    )
    await drain(services)
    chart = await owner.get(f"/admin/p/{project.id}/reports/events.svg")
    assert chart.status_code == 200
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert chart.headers.get_list("content-security-policy") == [
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
    ]
    assert "<svg" in chart.text
    values = re.findall(r'<desc class="value">([^<]*)</desc>', chart.text)
    assert len(values) == DAYS and values[-1] == "7"
    assert set(values[:-1]) <= {"0"}


async def test_signed_out_browsers_get_no_chart(
    client: httpx.AsyncClient, project: Project, clock: Clock
) -> None:
    anonymous = await client.get(f"/admin/p/{project.id}/reports/events.svg")
    assert anonymous.status_code == 303 and "/admin/login" in anonymous.headers["location"]
