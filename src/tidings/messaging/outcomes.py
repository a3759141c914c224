"""Recording what happened to claimed sends: ``sent``, ``failed`` once with the reason,
or ``pending`` again after a backoff; the events of final outcomes; and the crash rule's
side, ``reap``: sends whose claim expired while ``sending`` are ``failed``
(``interrupted``), never sent again."""

from __future__ import annotations

import logging
import random
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.channels import DeliveryResult, Outcome
from tidings.domain.messaging import backoff
from tidings.messaging.claims import Claimed
from tidings.messaging.events import EventOutbox, event_payload, identities_of
from tidings.messaging.sql import is_postgres
from tidings.store.database import Writer
from tidings.store.tables_messaging import campaigns, sends

__all__ = ["queue_events", "reap", "record_outcomes"]

logger = logging.getLogger("tidings.messaging.delivery")


def record_outcomes(
    conn: Connection,
    final: list[Claimed],
    retry: list[Claimed],
    now: int,
    *,
    rng: random.Random,
    backoff_base: float,
) -> None:
    """Final outcomes (``sent``, ``failed``) and retries (``pending`` after a backoff),
    in the caller's transaction; the final ones queue their events."""
    accepted = [c for c in final if c.result and c.result.outcome is Outcome.ACCEPTED]
    failed = [c for c in final if c.result and c.result.outcome is not Outcome.ACCEPTED]
    if accepted:
        # One statement, many parameter sets: compiled once (a CASE over the batch's
        # ids was recompiled every round).
        conn.execute(
            sa.update(sends)
            .where(sends.c.id == sa.bindparam("b_id"), sends.c.state == "sending")
            .values(
                state="sent",
                sent_at=now,
                provider_message_id=sa.bindparam("b_message"),
                reason=None,
                claimed_until=None,
                updated_at=now,
            ),
            [
                {"b_id": c.id, "b_message": c.result.provider_message_id if c.result else None}
                for c in accepted
            ],
        )
    for c in failed:
        reason = (c.result.reason if c.result else None) or "failed"
        if c.result and c.result.outcome is Outcome.TRANSIENT:
            reason = f"{reason} (gave up after {c.attempts} attempts)"
        c.result = DeliveryResult(Outcome.PERMANENT, reason=reason[:512])
    if failed:
        conn.execute(
            sa.update(sends)
            .where(sends.c.id == sa.bindparam("b_id"), sends.c.state == "sending")
            .values(
                state="failed",
                reason=sa.bindparam("b_reason"),
                claimed_until=None,
                updated_at=now,
            ),
            [{"b_id": c.id, "b_reason": c.result.reason if c.result else None} for c in failed],
        )
    if retry:
        rows = []
        for c in retry:
            assert c.result is not None
            wait = backoff(c.attempts, rng, base=backoff_base)
            if c.result.retry_after:
                wait = max(wait, int(c.result.retry_after * 1_000_000))
            rows.append(
                {"b_id": c.id, "b_reason": (c.result.reason or "")[:512], "b_due": now + wait}
            )
        conn.execute(
            sa.update(sends)
            .where(sends.c.id == sa.bindparam("b_id"), sends.c.state == "sending")
            .values(
                state="pending",
                reason=sa.bindparam("b_reason"),
                due_at=sa.bindparam("b_due"),
                claimed_until=None,
                updated_at=now,
            ),
            rows,
        )
    queue_events(conn, accepted + failed, now)


def queue_events(conn: Connection, items: list[Claimed], now: int) -> None:
    """The ``{channel}_sent`` / ``{channel}_failed`` events of final outcomes."""
    if not items:
        return
    by_project: dict[int, list[dict[str, Any]]] = {}
    for project_id in {c.project_id for c in items}:
        mine = [c for c in items if c.project_id == project_id]
        names = identities_of(conn, project_id, [c.profile_id for c in mine])
        for c in mine:
            identity = names.get(c.profile_id)
            if identity is None:  # the user was erased meanwhile
                continue
            ok = c.result is not None and c.result.outcome is Outcome.ACCEPTED
            data: dict[str, Any] = {"campaign_id": c.campaign_id, "send_id": c.id}
            if c.journey_id is not None:
                data["journey_id"] = c.journey_id
            if c.step_id is not None:
                data["step_id"] = c.step_id
            if not ok and c.result is not None:
                data["reason"] = c.result.reason
            outcome = "sent" if ok else "failed"
            by_project.setdefault(project_id, []).append(
                event_payload(
                    f"{c.channel}_{outcome}", identity, data, f"send_{c.id}_{outcome}", now
                )
            )
    for project_id, payloads in by_project.items():
        EventOutbox.add(conn, project_id, payloads, now)


def reap(
    writer: Writer, reader: Engine, now: int, *, rng: random.Random, backoff_base: float
) -> int:
    """Sends whose claim expired while ``sending``: failed, ``interrupted`` (at most
    once: they are never sent again). How many."""
    with reader.connect() as conn:
        stale = conn.execute(
            sa.select(
                sends.c.id,
                sends.c.project_id,
                sends.c.campaign_id,
                sends.c.subscription_id,
                sends.c.profile_id,
                sends.c.attempts,
                sends.c.journey_id,
                sends.c.step_id,
                campaigns.c.channel,
            )
            .select_from(sends.join(campaigns, campaigns.c.id == sends.c.campaign_id))
            .where(sends.c.state == "sending", sends.c.claimed_until < now)
            .limit(1000)
        ).all()
    if not stale:
        return 0
    items = [
        Claimed(
            id=r.id,
            project_id=r.project_id,
            campaign_id=r.campaign_id,
            subscription_id=r.subscription_id,
            profile_id=r.profile_id,
            context=None,
            attempts=r.attempts,
            journey_id=r.journey_id,
            step_id=r.step_id,
            channel=r.channel,
            provider=None,
            claimed_until=0,
            result=DeliveryResult(
                Outcome.PERMANENT,
                reason="interrupted: the worker stopped while sending; "
                "the provider may or may not have it",
            ),
        )
        for r in stale
    ]
    with writer.begin() as conn:
        query = sa.select(sends.c.id).where(
            sends.c.id.in_([i.id for i in items]),
            sends.c.state == "sending",
            sends.c.claimed_until < now,
        )
        if is_postgres(conn):
            query = query.with_for_update(skip_locked=True)
        still = set(conn.execute(query).scalars())
        items = [i for i in items if i.id in still]
        record_outcomes(conn, items, [], now, rng=rng, backoff_base=backoff_base)
    if items:
        logger.warning("%d sends were interrupted by a stopped worker", len(items))
    return len(items)
