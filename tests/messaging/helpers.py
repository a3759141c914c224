"""Helpers for messaging tests: set up a provider, a campaign and its template through
the API, and run the delivery worker's rounds by hand (deterministic)."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services
from tidings.domain.channels import Message
from tidings.messaging.providers.logger import LoggerProvider
from tidings.store.tables import events
from tidings.store.tables_messaging import sends

API = "/api/client"

EMAIL_TEMPLATE = {
    "from": {"name": "Shop", "address": "shop@example.com"},
    "subject": "Hello {{ user.first_name | default: 'there' }}",
    "html": "<p>Hi {{ user.first_name }}, order {{ event.order_id }}</p>",
}


def manual(services: Services) -> None:
    """Stop the delivery thread: the test runs rounds itself."""
    assert services.messaging is not None
    if services.messaging.worker is not None:
        services.messaging.worker.stop()


async def deliver(services: Services, rounds: int = 50) -> int:
    """Run campaign ticks and delivery rounds until a round finds nothing; then apply the
    events they appended. How many sends the rounds handled."""
    assert services.messaging is not None
    delivery = services.messaging.delivery
    handled = 0
    for _ in range(rounds):
        more = delivery.tick()
        done = await delivery.run_once()
        handled += done
        if not done and not more:
            break
    delivery.tick()
    await drain(services)
    return handled


async def post(client: httpx.AsyncClient, project: Project, path: str, body: Any) -> Any:
    response = await client.post(API + path, json=body, headers=bearer(project.sk))
    assert response.status_code in (200, 201), response.text
    return response.json()


async def patch(client: httpx.AsyncClient, project: Project, path: str, body: Any) -> Any:
    response = await client.patch(API + path, json=body, headers=bearer(project.sk))
    assert response.status_code == 200, response.text
    return response.json()


async def logger_provider(
    client: httpx.AsyncClient, project: Project, group: str = "email", **extra: Any
) -> dict[str, Any]:
    body = {"type": "logger", "name": f"log {group}", "group": group, "is_default": True}
    body.update(extra)
    result: dict[str, Any] = await post(client, project, "/providers", body)
    return result


async def trigger_campaign(
    client: httpx.AsyncClient,
    project: Project,
    *,
    channel: str = "email",
    template: dict[str, Any] | None = None,
    locale: str = "en",
    live: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    campaign: dict[str, Any] = await post(
        client,
        project,
        "/campaigns",
        {"type": "trigger", "name": "Welcome", "channel": channel, **extra},
    )
    await post(
        client,
        project,
        "/templates",
        {"campaign_id": campaign["id"], "locale": locale, "data": template or EMAIL_TEMPLATE},
    )
    if live:
        campaign = await patch(
            client, project, f"/campaigns/{campaign['id']}", {"state": "running"}
        )
    return campaign


def sent_by(services: Services, provider_id: int) -> list[Message]:
    assert services.messaging is not None
    adapter = services.messaging.delivery.adapter_of(provider_id)
    if adapter is None:
        return []
    assert isinstance(adapter, LoggerProvider)
    return list(adapter.sent)


def send_rows(services: Services, campaign_id: int) -> list[dict[str, Any]]:
    with services.db.reader.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(sends).where(sends.c.campaign_id == campaign_id).order_by(sends.c.id)
            )
        ]


def event_names(services: Services, project_id: int) -> list[tuple[str, dict[str, Any]]]:
    with services.db.reader.connect() as conn:
        return [
            (r.name, r.data)
            for r in conn.execute(
                sa.select(events.c.name, events.c.data)
                .where(events.c.project_id == project_id)
                .order_by(events.c.created_at, events.c.id)
            )
        ]
