"""A trigger campaign end to end: provider, template, trigger, outbox, delivery, events."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer
from tests.messaging.helpers import (
    API,
    deliver,
    event_names,
    logger_provider,
    manual,
    post,
    send_rows,
    sent_by,
    trigger_campaign,
)
from tidings.bootstrap import Services
from tidings.domain.channels import EmailMessage


async def test_trigger_sends_one_email_and_records_the_event(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    provider = await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    body = {
        "user": {"external_id": "u1", "email": "ann@example.com", "first_name": "<Ann>"},
        "event": {"order_id": "A-1"},
    }
    response = await client.post(
        f"{API}/campaigns/{campaign['id']}/trigger", json=body, headers=bearer(project.sk)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert await deliver(services) == 1

    [message] = sent_by(services, provider["id"])
    assert isinstance(message, EmailMessage)
    assert message.to == "ann@example.com"
    assert message.subject == "Hello <Ann>"  # plain text: not escaped
    assert message.html is not None
    assert "<p>Hi &lt;Ann&gt;, order A-1</p>" in message.html  # HTML: escaped
    assert message.text == "Hi <Ann>, order A-1"
    [row] = send_rows(services, campaign["id"])
    assert row["state"] == "sent" and row["attempts"] == 1
    names = event_names(services, project.id)
    sent = [data for name, data in names if name == "email_sent"]
    assert sent == [{"campaign_id": campaign["id"], "send_id": row["id"]}]

    listed = await client.get(f"{API}/campaigns/{campaign['id']}/sends", headers=bearer(project.sk))
    [shown] = listed.json()["results"]
    assert shown["external_id"] == "u1" and shown["state"] == "sent" and shown["sent_at"]
    got = (await client.get(f"{API}/campaigns/{campaign['id']}", headers=bearer(project.sk))).json()
    assert got["delivery"]["total"] == 1 and got["delivery"]["sent"] == 1


async def test_each_call_is_a_send_and_a_retried_key_is_the_same_send(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    provider = await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    url = f"{API}/campaigns/{campaign['id']}/trigger"
    body = {"user": {"external_id": "u1", "email": "ann@example.com"}}
    for _ in range(2):
        assert (await client.post(url, json=body, headers=bearer(project.sk))).status_code == 200
    keyed = bearer(project.sk, **{"Idempotency-Key": "reset-1"})
    first = await client.post(url, json=body, headers=keyed)
    again = await client.post(url, json=body, headers=keyed)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post(url, json={"user": {"external_id": "u2"}}, headers=keyed)
    assert_problem(other, 409, "idempotency_key_mismatch")
    await deliver(services)
    assert len(sent_by(services, provider["id"])) == 3
    assert len(send_rows(services, campaign["id"])) == 3


async def test_draft_campaign_refuses_triggers(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    await logger_provider(client, project)
    campaign = await trigger_campaign(client, project, live=False)
    response = await client.post(
        f"{API}/campaigns/{campaign['id']}/trigger",
        json={"user": {"external_id": "u1"}},
        headers=bearer(project.sk),
    )
    assert_problem(response, 409, "state_conflict")
    missing = await client.post(
        f"{API}/campaigns/{campaign['id']}/trigger", json={"event": {}}, headers=bearer(project.sk)
    )
    assert_problem(missing, 400, "parameter_missing")
    assert send_rows(services, campaign["id"]) == []


@pytest.mark.parametrize("fail", ["permanent", "transient"])
async def test_failures_are_recorded_once_with_the_reason(
    services: Services, client: httpx.AsyncClient, project: Project, fail: str
) -> None:
    manual(services)
    assert services.messaging is not None
    delivery = services.messaging.delivery
    delivery.config = type(delivery.config)(max_attempts=3, backoff_base=0.0)
    await logger_provider(client, project, data={"fail": fail})
    campaign = await trigger_campaign(client, project)
    await post(
        client,
        project,
        f"/campaigns/{campaign['id']}/trigger",
        {"user": {"external_id": "u1", "email": "a@example.com"}},
    )
    await deliver(services)
    [row] = send_rows(services, campaign["id"])
    assert row["state"] == "failed"
    assert row["attempts"] == (1 if fail == "permanent" else 3)
    assert "configured to fail" in row["reason"]
    failed = [d for n, d in event_names(services, project.id) if n == "email_failed"]
    assert len(failed) == 1 and failed[0]["campaign_id"] == campaign["id"]
    assert "configured to fail" in failed[0]["reason"]


async def test_the_services_own_delivery_worker_sends(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    """Without manual rounds: the worker thread that Services.start() runs delivers."""
    import asyncio

    assert services.messaging is not None and services.messaging.worker is not None
    await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    await post(
        client,
        project,
        f"/campaigns/{campaign['id']}/trigger",
        {"user": {"external_id": "u1", "email": "a@example.com"}},
    )
    for _ in range(500):
        rows = send_rows(services, campaign["id"])
        if rows and rows[0]["state"] == "sent":
            break
        await asyncio.sleep(0.02)
    assert [r["state"] for r in send_rows(services, campaign["id"])] == ["sent"]


async def test_a_tracker_decorates_each_email_with_its_send(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    """The seam tracking plugs into: decorate_email(message, TrackingRef)."""
    import dataclasses

    from tidings.domain.tracking import TrackingRef

    manual(services)
    assert services.messaging is not None
    seen: list[TrackingRef] = []

    class Tracker:
        def decorate_email(self, message: EmailMessage, ref: TrackingRef) -> EmailMessage:
            seen.append(ref)
            return dataclasses.replace(message, headers={"List-Unsubscribe": f"<u/{ref.send_id}>"})

    services.messaging.delivery.tracker = Tracker()
    provider = await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    await post(
        client,
        project,
        f"/campaigns/{campaign['id']}/trigger",
        {"user": {"external_id": "u1", "email": "a@example.com"}},
    )
    await deliver(services)
    [row] = send_rows(services, campaign["id"])
    [ref] = seen
    assert ref == TrackingRef(
        project_id=project.id,
        profile_id=row["profile_id"],
        campaign_id=campaign["id"],
        send_id=row["id"],
        subscription_id=campaign["subscription_id"],
        channel="email",
    )
    [message] = sent_by(services, provider["id"])
    assert isinstance(message, EmailMessage)
    assert message.headers == {"List-Unsubscribe": f"<u/{row['id']}>"}
