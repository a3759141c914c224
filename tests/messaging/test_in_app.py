"""In-app sends go to the InAppSink inside the claim's transaction (chan's notification
store plugs in there); without one they fail with a clear reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import sqlalchemy as sa

from tests.conftest import Project
from tests.messaging.helpers import deliver, event_names, manual, post, send_rows, trigger_campaign
from tidings.bootstrap import Services
from tidings.store.tables_messaging import sends

IN_APP = {"type": "banner", "title": "Hi {{ user.first_name }}", "body": "New: {{ event.item }}"}


class Sink:
    """Stores notifications in a list, reading the send's row through the caller's
    connection (so the claim's transaction is the one it runs in)."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create(
        self,
        conn: Any,
        *,
        project_id: int,
        profile_id: str,
        campaign_id: int,
        send_id: int,
        content: Mapping[str, Any],
        now: int,
    ) -> int:
        state = conn.execute(sa.select(sends.c.state).where(sends.c.id == send_id)).scalar_one()
        self.created.append(
            {
                "profile_id": profile_id,
                "campaign_id": campaign_id,
                "content": dict(content),
                "state": state,
            }
        )
        return len(self.created)


async def test_in_app_sends_go_to_the_sink_in_the_claim(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    sink = Sink()
    services.messaging.delivery.in_app = sink
    campaign = await trigger_campaign(client, project, channel="in_app", template=IN_APP)
    user = {"external_id": "u1", "first_name": "Ann"}
    await post(
        client,
        project,
        f"/campaigns/{campaign['id']}/trigger",
        {"user": user, "event": {"item": "shoes"}},
    )
    await deliver(services)
    [made] = sink.created
    assert made["state"] == "sending"  # inside the claim, before it commits
    assert made["content"] == {"type": "banner", "title": "Hi Ann", "body": "New: shoes"}
    [row] = send_rows(services, campaign["id"])
    assert row["state"] == "sent" and row["provider_message_id"] == "inapp_1"
    assert [n for n, _ in event_names(services, project.id) if n.startswith("in_app")] == [
        "in_app_sent"
    ]


async def test_without_a_sink_in_app_sends_fail_with_the_reason(
    services: Services, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    assert services.messaging is not None
    services.messaging.delivery.in_app = None  # a delivery built without the notifications
    campaign = await trigger_campaign(client, project, channel="in_app", template=IN_APP)
    await post(
        client, project, f"/campaigns/{campaign['id']}/trigger", {"user": {"external_id": "u1"}}
    )
    await deliver(services)
    [row] = send_rows(services, campaign["id"])
    assert row["state"] == "failed" and row["reason"].startswith("in_app_unavailable")
