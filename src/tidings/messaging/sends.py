"""``domain.sending.Sends`` over the outbox table ``sends``: what journeys' action steps
and ``POST /campaigns/{id}/trigger`` call to queue one message.

``enqueue`` writes in the caller's transaction and never commits: the journey step (or
the trigger's idempotency record) and its send are one commit. The unique key
(campaign, profile, reference) turns a repeated call into ``DUPLICATE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tidings.domain.sending import Enqueued, SendRequest
from tidings.messaging.sql import insert_ignoring
from tidings.store.tables_messaging import campaigns, sends

__all__ = ["OutboxSends"]

_ACCEPTING = ("running", "loading")


class OutboxSends:
    """Implements ``tidings.domain.sending.Sends``. ``wake`` (optional) tells the delivery
    worker of this process that a send is due (after the caller commits it wakes up
    within its idle wait anyway)."""

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self.wake = wake

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        campaign = conn.execute(
            sa.select(
                campaigns.c.project_id,
                campaigns.c.state,
                campaigns.c.subscription_id,
                campaigns.c.deleted_at,
            ).where(campaigns.c.id == request.campaign_id)
        ).first()
        if (
            campaign is None
            or campaign.project_id != request.project_id
            or campaign.deleted_at is not None
            or campaign.state not in _ACCEPTING
        ):
            return Enqueued.NOT_RUNNING
        context = dict(request.context) if request.context else None
        inserted = insert_ignoring(
            conn,
            sends,
            {
                "project_id": request.project_id,
                "campaign_id": request.campaign_id,
                "subscription_id": campaign.subscription_id,
                "profile_id": request.profile_id,
                "reference": request.reference[:255],
                "state": "pending",
                "due_at": request.send_at if request.send_at is not None else now,
                "attempts": 0,
                "context": context,
                "journey_id": request.journey_id,
                "step_id": request.step_id,
                "created_at": now,
                "updated_at": now,
            },
            ("campaign_id", "profile_id", "reference"),
            returning=sends.c.id,
        )
        if not inserted:
            return Enqueued.DUPLICATE
        if self.wake is not None:
            self.wake()
        return Enqueued.QUEUED

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    sends.c.project_id == project_id,
                    sends.c.profile_id == profile_id,
                    sends.c.created_at >= since,
                    sends.c.state.in_(("pending", "sending", "sent")),
                )
            ).scalar_one()
        )
