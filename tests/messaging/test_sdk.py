"""The Python SDK's ``trigger_campaign`` against the real endpoint."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Project
from tests.messaging.helpers import (
    deliver,
    logger_provider,
    manual,
    send_rows,
    sent_by,
    trigger_campaign,
)
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services
from tidings.domain.channels import EmailMessage
from tidings_client import AsyncClient, ConflictError


async def test_sdk_trigger_campaign_sends_and_a_draft_raises(
    services: Services, app: TidingsApp, client: httpx.AsyncClient, project: Project
) -> None:
    manual(services)
    provider = await logger_provider(client, project)
    campaign = await trigger_campaign(client, project)
    draft = await trigger_campaign(client, project, live=False)
    sdk = AsyncClient(
        project.sk, base_url="http://tidings.test", transport=httpx.ASGITransport(app=app)
    )
    try:
        await sdk.trigger_campaign(
            campaign["id"],
            external_id="u1",
            email="ann@example.com",
            traits={"firstName": "Ann"},
            event={"order_id": "A-7"},
            idempotency_key="order-A-7",
        )
        await sdk.trigger_campaign(  # a retry: the same send
            campaign["id"],
            external_id="u1",
            email="ann@example.com",
            traits={"firstName": "Ann"},
            event={"order_id": "A-7"},
            idempotency_key="order-A-7",
        )
        with pytest.raises(ConflictError):
            await sdk.trigger_campaign(draft["id"], external_id="u1")
    finally:
        await sdk.aclose()
    await deliver(services)
    [message] = sent_by(services, provider["id"])
    assert isinstance(message, EmailMessage)
    assert message.subject == "Hello Ann"  # traits → user.data, converted to first_name
    assert message.html is not None and "order A-7" in message.html
    assert len(send_rows(services, campaign["id"])) == 1
