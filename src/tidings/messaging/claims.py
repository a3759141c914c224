"""What one delivery round claimed, and the reads and rate windows of the claim (the
claim itself is ``Delivery._claim``, messaging/delivery.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.channels import DeliveryResult, Message
from tidings.domain.messaging import RATE_INTERVALS, window_start
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.ratewindows import take
from tidings.store.tables_messaging import campaigns, sends

__all__ = ["Claimed", "Round", "campaigns_of", "rate_limited"]


@dataclass
class Claimed:
    id: int
    project_id: int
    campaign_id: int
    subscription_id: int
    profile_id: str
    context: Mapping[str, Any] | None
    attempts: int
    journey_id: int | None
    step_id: int | None
    channel: str
    provider: dict[str, Any] | None
    claimed_until: int
    message: Message | None = None
    result: DeliveryResult | None = None
    done_in_claim: bool = False  # in-app: stored and sent in the claim's transaction


@dataclass
class Round:
    claimed: list[Claimed] = field(default_factory=list)
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def campaigns_of(conn: Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(
        sa.select(
            campaigns.c.id,
            campaigns.c.project_id,
            campaigns.c.state,
            campaigns.c.channel,
            campaigns.c.provider_id,
            campaigns.c.deleted_at,
        ).where(campaigns.c.id.in_(ids))
    ):
        if row.deleted_at is not None:
            continue
        provider = CampaignStore.provider_for(conn, row.project_id, row.channel, row.provider_id)
        out[row.id] = {"state": row.state, "channel": row.channel, "provider": provider}
    return out


def rate_limited(conn: Connection, claimable: list[Claimed], now: int) -> list[Claimed]:
    """Keep what each provider's rate window allows; push the rest to the next window."""
    by_provider: dict[int, list[Claimed]] = {}
    for c in claimable:
        if c.provider and c.provider["rate_limit"] > 0 and c.result is None:
            by_provider.setdefault(c.provider["id"], []).append(c)
    if not by_provider:
        return claimable
    held: set[int] = set()
    for provider_id, items in sorted(by_provider.items()):
        provider = items[0].provider
        assert provider is not None
        interval = provider["rate_interval"]
        start = window_start(now, interval)
        granted = take(conn, provider_id, start, provider["rate_limit"], len(items))
        if granted < len(items):
            later = [c.id for c in items[granted:]]
            held.update(later)
            conn.execute(
                sa.update(sends)
                .where(sends.c.id.in_(later))
                .values(due_at=start + RATE_INTERVALS[interval], updated_at=now)
            )
    return [c for c in claimable if c.id not in held]
