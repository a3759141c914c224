"""Blast campaigns: lists minus exclusions, scheduled → loading → running → finished,
the state machine's refusals, per-user wall-clock times, abort."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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
)
from tidings.bootstrap import Services
from tidings.domain.channels import EmailMessage
from tidings.messaging.blasts import BlastRunner


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat()


async def _static_list(
    client: httpx.AsyncClient, project: Project, users: list[dict[str, Any]]
) -> int:
    response = await client.post(f"{API}/users/batch", json=users, headers=bearer(project.sk))
    assert response.status_code == 200 and response.json()["failed"] == 0, response.text
    created = await post(client, project, "/lists", {"name": "L", "type": "static"})
    ids = [u["external_id"] for u in users]
    await post(client, project, f"/lists/{created['id']}/users", {"external_ids": ids})
    return int(created["id"])


async def _blast(client: httpx.AsyncClient, project: Project, **fields: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = await post(
        client,
        project,
        "/campaigns",
        {"type": "blast", "name": "News", "channel": "email", **fields},
    )
    await post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": "en", "data": EMAIL_TEMPLATE},
    )
    return campaign


def _users(prefix: str, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"external_id": f"{prefix}{i}", "email": f"{prefix}{i}@example.com", **extra}
        for i in range(count)
    ]


async def test_blast_to_lists_minus_exclusions_and_the_unsubscribed(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    provider = await logger_provider(client, project)
    everyone = await _static_list(client, project, _users("a", 7))
    excluded = await _static_list(client, project, _users("a", 2))  # a0, a1
    other = await _static_list(client, project, _users("b", 2))
    campaign = await _blast(
        client, project, list_ids=[everyone, other], exclusion_list_ids=[excluded]
    )
    email_type = campaign["subscription_id"]
    await patch(
        client, project, "/users/a2/subscriptions", [{"subscription_id": email_type, "state": 0}]
    )
    assert services.messaging is not None
    services.messaging.delivery.blasts = BlastRunner(
        services.db.writer, services.db.reader, chunk=2
    )

    draft_run = await client.patch(
        f"{API}/campaigns/{campaign['id']}", json={"state": "running"}, headers=bearer(project.sk)
    )
    assert_problem(draft_run, 409, "state_conflict")
    no_time = await client.patch(
        f"{API}/campaigns/{campaign['id']}", json={"state": "scheduled"}, headers=bearer(project.sk)
    )
    assert_problem(no_time, 422, "validation_failed")
    send_at = _iso(time.time_ns() // 1000 - 1_000_000)
    scheduled = await patch(
        client, project, f"/campaigns/{campaign['id']}", {"state": "scheduled", "send_at": send_at}
    )
    assert scheduled["state"] == "scheduled"
    await deliver(services)

    got = (await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))).json()
    assert got["state"] == "finished"
    assert got["delivery"]["total"] == 7  # a2..a6 and b0, b1
    assert got["delivery"]["sent"] == 6 and got["delivery"]["skipped"] == 1
    received = sorted(
        m.to for m in sent_by(services, provider["id"]) if isinstance(m, EmailMessage)
    )
    assert received == sorted(
        [f"a{i}@example.com" for i in (3, 4, 5, 6)] + ["b0@example.com", "b1@example.com"]
    )
    skipped = (
        await client.get(
            f"{API}/campaigns/{campaign['id']}/sends?state=skipped", headers=bearer(project.sk)
        )
    ).json()["results"]
    assert [(s["external_id"], s["reason"]) for s in skipped] == [("a2", "unsubscribed")]
    finished = await client.patch(
        f"{API}/campaigns/{campaign['id']}", json={"state": "aborting"}, headers=bearer(project.sk)
    )
    assert_problem(finished, 409, "state_conflict")


async def test_send_in_user_timezone_queues_each_at_their_wall_clock(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project)
    users = [
        {"external_id": "tokyo", "email": "t@example.com", "timezone": "Asia/Tokyo"},
        {"external_id": "ny", "email": "n@example.com", "timezone": "America/New_York"},
        {"external_id": "nowhere", "email": "x@example.com"},  # the project's: Sydney
    ]
    listed = await _static_list(client, project, users)
    campaign = await _blast(client, project, list_ids=[listed], send_in_user_timezone=True)
    # The next 09:00 in the project's timezone at least an hour ahead: within 26 hours,
    # so loading starts now (whatever the time of day the test runs at).
    sydney = ZoneInfo("Australia/Sydney")
    now = datetime.now(sydney)
    day = now.date().toordinal()
    if datetime.fromordinal(day).replace(hour=9, tzinfo=sydney) < now + timedelta(hours=1):
        day += 1
    wall = datetime.fromordinal(day).replace(hour=9)
    send_at = wall.replace(tzinfo=sydney)
    await patch(
        client,
        project,
        f"/campaigns/{campaign['id']}",
        {"state": "scheduled", "send_at": send_at.isoformat()},
    )
    await deliver(services)
    due = {r["profile_id"]: r["due_at"] for r in send_rows(services, campaign["id"])}
    assert len(due) == 3
    expected = sorted(
        int(wall.replace(tzinfo=ZoneInfo(zone)).timestamp() * 1_000_000)
        for zone in ("Asia/Tokyo", "America/New_York", "Australia/Sydney")
    )
    assert sorted(due.values()) == expected
    got = (await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))).json()
    assert got["state"] == "running" and got["delivery"]["sent"] == 0

    aborted = await patch(client, project, f"/campaigns/{campaign['id']}", {"state": "aborting"})
    assert aborted["state"] == "aborting"
    await deliver(services)
    got = (await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))).json()
    assert got["state"] == "aborted"
    assert got["delivery"]["skipped"] == 3 and got["delivery"]["sent"] == 0
