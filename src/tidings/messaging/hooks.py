"""What an identity merge or an erasure means for messaging, applied inside the batch
that made it (a ``pipeline.processor.BatchHook``, wired in ``bootstrap``).

- **Merge** (absorbed → survivor): the absorbed profile's subscription states move to
  the survivor. Where both have one for a type, an unsubscribe wins (the person said
  no under one of their identities: never mail them for that type), else the higher
  state. Its sends move too; a send the survivor already has (same campaign and
  reference) is skipped as ``merged``.
- **Erasure**: the profile's states go, and its pending sends are skipped as
  ``user_erased``.
- **Tracking events** (``email_opened``, ``email_clicked``, ``email_bounced`` with
  ``data.campaign_id``): the campaign's ``delivery`` counters, in
  the transaction that stores the event, so a replayed or duplicate event (same message
  id, dropped before the hooks) never counts twice.

Idempotent with the batch: a failed batch rolls back, hooks included.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.messaging.campaigns import CampaignStore
from tidings.store.tables_messaging import sends, user_subscriptions

__all__ = ["MessagingBatchHook"]


_COUNTERS = {
    "email_opened": "opens",
    "email_clicked": "clicks",
    "email_bounced": "bounced",
}  # ``unsubscribed`` is counted by SubscriptionStore.set_state, which knows the campaign


class MessagingBatchHook:
    def apply(self, conn: Connection, facts: Any, now: int) -> None:
        counts: dict[tuple[int, str], int] = {}
        for event in facts.events:
            counter = _COUNTERS.get(event["name"])
            data = event.get("data") or {}
            campaign_id = data.get("campaign_id") if isinstance(data, dict) else None
            if counter is not None and type(campaign_id) is int:
                key = (campaign_id, counter)
                counts[key] = counts.get(key, 0) + 1
        for (campaign_id, counter), by in sorted(counts.items()):
            CampaignStore.bump_stat(conn, campaign_id, counter, by)
        for _project_id, absorbed, survivor in facts.merges:
            self._merge(conn, absorbed, survivor, now)
        for _project_id, profile_id in facts.erased:
            conn.execute(
                sa.delete(user_subscriptions).where(user_subscriptions.c.profile_id == profile_id)
            )
            conn.execute(
                sa.update(sends)
                .where(sends.c.profile_id == profile_id, sends.c.state == "pending")
                .values(state="skipped", reason="user_erased", updated_at=now)
            )

    @staticmethod
    def _merge(conn: Connection, absorbed: str, survivor: str, now: int) -> None:
        def states(profile_id: str) -> dict[int, int]:
            return dict(
                conn.execute(
                    sa.select(
                        user_subscriptions.c.subscription_id, user_subscriptions.c.state
                    ).where(user_subscriptions.c.profile_id == profile_id)
                ).all()
            )

        theirs, ours = states(absorbed), states(survivor)
        for subscription_id, state in theirs.items():
            if subscription_id not in ours:
                conn.execute(
                    sa.update(user_subscriptions)
                    .where(
                        user_subscriptions.c.profile_id == absorbed,
                        user_subscriptions.c.subscription_id == subscription_id,
                    )
                    .values(profile_id=survivor, updated_at=now)
                )
                continue
            mine = ours[subscription_id]
            merged = 0 if 0 in (state, mine) else max(state, mine)
            if merged != mine:
                conn.execute(
                    sa.update(user_subscriptions)
                    .where(
                        user_subscriptions.c.profile_id == survivor,
                        user_subscriptions.c.subscription_id == subscription_id,
                    )
                    .values(state=merged, updated_at=now)
                )
        conn.execute(
            sa.delete(user_subscriptions).where(user_subscriptions.c.profile_id == absorbed)
        )
        taken = sa.select(sends.c.campaign_id, sends.c.reference).where(
            sends.c.profile_id == survivor
        )
        existing = {(c, r) for c, r in conn.execute(taken)}
        for send_id, campaign_id, reference, state in conn.execute(
            sa.select(sends.c.id, sends.c.campaign_id, sends.c.reference, sends.c.state).where(
                sends.c.profile_id == absorbed
            )
        ).all():
            if (campaign_id, reference) in existing:
                if state == "pending":
                    conn.execute(
                        sa.update(sends)
                        .where(sends.c.id == send_id)
                        .values(state="skipped", reason="merged", updated_at=now)
                    )
                continue
            conn.execute(sa.update(sends).where(sends.c.id == send_id).values(profile_id=survivor))
