"""The delivery worker: claims due sends, renders them, hands them to providers, and
records what happened.

One round (``run_once``):

1. **Claim**, in one transaction: due ``pending`` rows (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so several workers share the outbox; SQLite has one writer at a time),
   keeping only users whose subscription lock can be had at once (an unsubscribe in
   progress holds it: see messaging/subscriptions.py). In the same transaction it reads
   each user's **subscription state**: the unsubscribed are ``skipped``, never sent. It
   takes a share of each provider's **rate window** (a counter row shared by every
   worker); rows beyond it wait for the next window. The rest become ``sending`` with
   a claim that expires after ``lease`` seconds. In-app sends are stored by the
   ``InAppSink`` right here, and are ``sent`` when this transaction commits.
2. **Send**, outside any transaction: render (Liquid), let the tracker decorate emails,
   call the adapters concurrently. A claim that expired meanwhile is not sent.
3. **Record**, in one transaction: ``sent``; ``failed`` once with the reason
   (permanent failures, and transient ones after ``max_attempts``); or ``pending``
   again after a backoff with jitter. Each final outcome is queued as an event
   (``{channel}_sent`` / ``{channel}_failed``) in ``pending_events``, then appended to
   the ingest log (messaging/events.py) under the message id ``send_<id>_<outcome>``.

The crash rule (**at most once**): a send whose claim expired while still ``sending`` —
the worker died between claiming and recording — is never sent again. It is recorded
``failed`` with reason ``interrupted`` (and a ``{channel}_failed`` event), since the
provider may or may not have accepted it. So no user gets a message twice, and every
send that might not have gone out is visible as such (``GET /campaigns/{id}/sends
?state=failed``). At most ``batch_size`` sends per worker can be interrupted by a crash.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.channels import DeliveryResult, InAppMessage, Outcome, ProviderAdapter
from tidings.domain.messaging import receives
from tidings.domain.tracking import InAppSink, Tracker
from tidings.messaging.blasts import BlastRunner
from tidings.messaging.claims import Claimed, Round, campaigns_of, rate_limited
from tidings.messaging.events import EventOutbox
from tidings.messaging.outcomes import reap, record_outcomes
from tidings.messaging.providers import build_adapter
from tidings.messaging.recipients import states
from tidings.messaging.rendering import Renderer
from tidings.messaging.sql import is_postgres, try_lock_profiles
from tidings.store.database import Writer
from tidings.store.tables_messaging import sends, subscription_types

__all__ = ["AdapterFactory", "Delivery", "DeliveryConfig"]

logger = logging.getLogger(__name__)

AdapterFactory = Callable[[str, Mapping[str, Any]], ProviderAdapter]


@dataclass(frozen=True)
class DeliveryConfig:
    batch_size: int = 500
    concurrency: int = 200  # sends in flight at once per worker
    lease: float = 120.0  # seconds a claim lasts
    max_attempts: int = 5
    idle_wait: float = 0.2
    backoff_base: float = 5.0  # seconds before the first retry (then doubling, jittered)


class Delivery:
    """One worker's delivery logic; ``run_once`` is one claim-send-record round."""

    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        outbox: EventOutbox,
        *,
        tracker: Tracker | None = None,
        in_app: InAppSink | None = None,
        clock: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        adapter_factory: AdapterFactory = build_adapter,
        config: DeliveryConfig | None = None,
        blasts: BlastRunner | None = None,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.outbox = outbox
        self.in_app = in_app
        self.clock = clock or (lambda: time.time_ns() // 1000)
        self.rng = rng or random.Random()
        self.adapter_factory = adapter_factory
        self.config = config or DeliveryConfig()
        self.blasts = blasts or BlastRunner(writer, reader)
        self._adapters: dict[int, tuple[int, ProviderAdapter]] = {}
        self.renderer = Renderer(reader, tracker)
        self.sent_total = 0

    @property
    def tracker(self) -> Tracker | None:
        """What decorates emails (the renderer's)."""
        return self.renderer.tracker

    @tracker.setter
    def tracker(self, tracker: Tracker | None) -> None:
        self.renderer.tracker = tracker

    # -- one round ------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim, send and record one batch; how many sends it finished or retried."""
        now = self.clock()
        self.reap(now)
        round_ = self._claim(now)
        if not round_.claimed:
            if round_.events:
                self._record(round_, self.clock())
            return 0
        await self._send(round_)
        self._record(round_, self.clock())
        return len(round_.claimed)

    def tick(self) -> bool:
        """Campaign states (blasts) and events waiting for the log; True if more to do."""
        more = self.blasts.tick(self.clock())
        self.outbox.flush()
        return more

    # -- claim ----------------------------------------------------------------------------------

    def _claim(self, now: int) -> Round:
        round_ = Round()
        lease = int(self.config.lease * 1_000_000)
        with self.writer.begin() as conn:
            query = (
                sa.select(
                    sends.c.id,
                    sends.c.project_id,
                    sends.c.campaign_id,
                    sends.c.subscription_id,
                    sends.c.profile_id,
                    sends.c.context,
                    sends.c.attempts,
                    sends.c.journey_id,
                    sends.c.step_id,
                )
                .where(sends.c.state == "pending", sends.c.due_at <= now)
                .order_by(sends.c.due_at, sends.c.id)
                .limit(self.config.batch_size)
            )
            if is_postgres(conn):
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return round_
            free = try_lock_profiles(conn, [r.profile_id for r in rows])
            rows = [r for r in rows if r.profile_id in free]
            info = campaigns_of(conn, {r.campaign_id for r in rows})
            opt_in = dict(
                conn.execute(
                    sa.select(subscription_types.c.id, subscription_types.c.requires_opt_in).where(
                        subscription_types.c.id.in_({r.subscription_id for r in rows})
                    )
                ).all()
            )
            recorded = states(conn, [r.profile_id for r in rows])
            skipped: dict[int, str] = {}
            failed: dict[int, str] = {}
            claimable: list[Claimed] = []
            for r in rows:
                campaign = info.get(r.campaign_id)
                if campaign is None or campaign["state"] not in ("running", "loading"):
                    skipped[r.id] = "campaign_not_running"
                    continue
                if not receives(
                    recorded.get((r.profile_id, r.subscription_id)),
                    requires_opt_in=bool(opt_in.get(r.subscription_id)),
                ):
                    skipped[r.id] = "unsubscribed"
                    continue
                provider = campaign["provider"]
                if provider is None and campaign["channel"] != "in_app":
                    failed[r.id] = f"no_provider: no {campaign['channel']} provider is set up"
                claimable.append(
                    Claimed(
                        id=r.id,
                        project_id=r.project_id,
                        campaign_id=r.campaign_id,
                        subscription_id=r.subscription_id,
                        profile_id=r.profile_id,
                        context=r.context,
                        attempts=r.attempts + 1,
                        journey_id=r.journey_id,
                        step_id=r.step_id,
                        channel=campaign["channel"],
                        provider=provider,
                        claimed_until=now + lease,
                    )
                )
            claimable = rate_limited(conn, claimable, now)
            if skipped:
                for reason in set(skipped.values()):
                    conn.execute(
                        sa.update(sends)
                        .where(sends.c.id.in_([i for i, v in skipped.items() if v == reason]))
                        .values(state="skipped", reason=reason, updated_at=now)
                    )
            if claimable:
                conn.execute(
                    sa.update(sends)
                    .where(sends.c.id.in_([c.id for c in claimable]))
                    .values(
                        state="sending",
                        attempts=sends.c.attempts + 1,
                        claimed_until=now + lease,
                        updated_at=now,
                    )
                )
            for c in claimable:
                if c.id in failed:
                    c.result = DeliveryResult(Outcome.PERMANENT, reason=failed[c.id])
            self._in_app(
                conn, [c for c in claimable if c.channel == "in_app" and not c.result], now
            )
        round_.claimed = claimable
        return round_

    def _in_app(self, conn: Connection, items: list[Claimed], now: int) -> None:
        if not items:
            return
        if self.in_app is None:
            for c in items:
                c.result = DeliveryResult(
                    Outcome.PERMANENT, reason="in_app_unavailable: in-app notifications are off"
                )
            return
        self.renderer.render(items, conn=conn)
        for c in items:
            if c.result is not None or not isinstance(c.message, InAppMessage):
                continue
            notification = self.in_app.create(
                conn,
                project_id=c.project_id,
                profile_id=c.profile_id,
                campaign_id=c.campaign_id,
                send_id=c.id,
                content=c.message.content,
                now=now,
            )
            c.result = DeliveryResult(Outcome.ACCEPTED, provider_message_id=f"inapp_{notification}")
            c.done_in_claim = True
        self._record_outcomes(conn, [c for c in items if c.done_in_claim], [], now)

    # -- render and send ------------------------------------------------------------------------

    def adapter_of(self, provider_id: int) -> ProviderAdapter | None:
        """The adapter this worker built for a provider (what a ``logger`` recorded)."""
        cached = self._adapters.get(provider_id)
        return cached[1] if cached is not None else None

    def _adapter(self, provider: Mapping[str, Any]) -> ProviderAdapter:
        cached = self._adapters.get(provider["id"])
        if cached is not None and cached[0] == provider["updated_at"]:
            return cached[1]
        adapter = self.adapter_factory(provider["type"], provider["data"])
        if cached is not None:
            asyncio.get_running_loop().create_task(cached[1].aclose())
        self._adapters[provider["id"]] = (provider["updated_at"], adapter)
        return adapter

    async def _send(self, round_: Round) -> None:
        pending = [c for c in round_.claimed if c.result is None]
        self.renderer.render(pending)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(c: Claimed) -> None:
            assert c.message is not None and c.provider is not None
            if self.clock() >= c.claimed_until:
                c.result = DeliveryResult(
                    Outcome.PERMANENT, reason="interrupted: the claim expired before sending"
                )
                return
            try:
                adapter = self._adapter(c.provider)
            except Exception as exc:  # an unknown type, or data the adapter refuses
                c.result = DeliveryResult(Outcome.PERMANENT, reason=f"provider_invalid: {exc}")
                return
            async with limit:
                try:
                    c.result = await adapter.send(c.message)
                except Exception as exc:  # adapters should not raise; count it transient
                    logger.warning("provider %s raised", c.provider.get("type"), exc_info=True)
                    c.result = DeliveryResult(Outcome.TRANSIENT, reason=f"adapter error: {exc}")

        ready = [c for c in pending if c.result is None]
        for start in range(0, len(ready), self.config.concurrency):
            await asyncio.gather(*(one(c) for c in ready[start : start + self.config.concurrency]))

    # -- record ---------------------------------------------------------------------------------

    def _record(self, round_: Round, now: int) -> None:
        final = [c for c in round_.claimed if not c.done_in_claim and c.result is not None]
        retry = [
            c
            for c in final
            if c.result is not None
            and c.result.outcome is Outcome.TRANSIENT
            and c.attempts < self.config.max_attempts
        ]
        retry_ids = {c.id for c in retry}
        with self.writer.begin() as conn:
            self._record_outcomes(conn, [c for c in final if c.id not in retry_ids], retry, now)
        self.sent_total += sum(
            1 for c in round_.claimed if c.result and c.result.outcome is Outcome.ACCEPTED
        )
        try:
            self.outbox.flush()
        except Exception:  # the next tick appends them
            logger.warning("appending send events failed", exc_info=True)

    def _record_outcomes(
        self, conn: Connection, final: list[Claimed], retry: list[Claimed], now: int
    ) -> None:
        record_outcomes(
            conn, final, retry, now, rng=self.rng, backoff_base=self.config.backoff_base
        )

    # -- crash recovery -------------------------------------------------------------------------

    def reap(self, now: int) -> int:
        """Sends whose claim expired while ``sending``: failed, ``interrupted`` (at most
        once: they are never sent again). How many."""
        return reap(
            self.writer, self.reader, now, rng=self.rng, backoff_base=self.config.backoff_base
        )

    async def aclose(self) -> None:
        for _, adapter in self._adapters.values():
            try:
                await adapter.aclose()
            except Exception:
                logger.warning("closing a provider adapter failed", exc_info=True)
        self._adapters.clear()
