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
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.channels import (
    DeliveryResult,
    EmailMessage,
    InAppMessage,
    Message,
    Outcome,
    ProviderAdapter,
)
from tidings.domain.messaging import (
    RATE_INTERVALS,
    backoff,
    locale_candidates,
    receives,
    window_start,
)
from tidings.domain.tracking import InAppSink, Tracker, TrackingRef
from tidings.messaging.blasts import BlastRunner
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.events import EventOutbox, event_payload, identities_of
from tidings.messaging.providers import build_adapter
from tidings.messaging.ratewindows import take
from tidings.messaging.recipients import push_tokens, states, template_users
from tidings.messaging.sql import is_postgres, try_lock_profiles
from tidings.messaging.templates import CompiledTemplate, RenderError, compile_template
from tidings.store.database import Writer
from tidings.store.tables import projects
from tidings.store.tables_messaging import (
    campaigns,
    sends,
    subscription_types,
    templates,
)

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


@dataclass
class _Claimed:
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
class _Round:
    claimed: list[_Claimed] = field(default_factory=list)
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


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
        self.tracker = tracker
        self.in_app = in_app
        self.clock = clock or (lambda: time.time_ns() // 1000)
        self.rng = rng or random.Random()
        self.adapter_factory = adapter_factory
        self.config = config or DeliveryConfig()
        self.blasts = blasts or BlastRunner(writer, reader)
        self._adapters: dict[int, tuple[int, ProviderAdapter]] = {}
        self._templates: dict[int, tuple[int, CompiledTemplate | RenderError]] = {}
        self.sent_total = 0

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

    def _claim(self, now: int) -> _Round:
        round_ = _Round()
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
            info = self._campaigns(conn, {r.campaign_id for r in rows})
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
            claimable: list[_Claimed] = []
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
                    _Claimed(
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
            claimable = self._rate_limited(conn, claimable, now)
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

    def _campaigns(self, conn: Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
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
            provider = CampaignStore.provider_for(
                conn, row.project_id, row.channel, row.provider_id
            )
            out[row.id] = {"state": row.state, "channel": row.channel, "provider": provider}
        return out

    def _rate_limited(
        self, conn: Connection, claimable: list[_Claimed], now: int
    ) -> list[_Claimed]:
        """Keep what each provider's rate window allows; push the rest to the next window."""
        by_provider: dict[int, list[_Claimed]] = {}
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

    def _in_app(self, conn: Connection, items: list[_Claimed], now: int) -> None:
        if not items:
            return
        if self.in_app is None:
            for c in items:
                c.result = DeliveryResult(
                    Outcome.PERMANENT, reason="in_app_unavailable: in-app notifications are off"
                )
            return
        self._render(items, conn=conn)
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

    def _render(self, items: list[_Claimed], conn: Connection | None = None) -> None:
        if conn is None:
            with self.reader.connect() as own:
                self._render(items, own)
            return
        todo = [c for c in items if c.result is None]
        if not todo:
            return
        people = template_users(conn, {c.profile_id for c in todo})
        tokens = push_tokens(conn, {c.profile_id for c in todo if c.channel == "push"})
        project_rows = {
            row.id: row
            for row in conn.execute(
                sa.select(projects).where(projects.c.id.in_({c.project_id for c in todo}))
            )
        }
        by_campaign = self._campaign_templates(conn, {c.campaign_id for c in todo})
        for c in todo:
            person = people.get(c.profile_id)
            if person is None:
                c.result = DeliveryResult(Outcome.PERMANENT, reason="user_missing")
                continue
            project = project_rows[c.project_id]
            choices = by_campaign.get(c.campaign_id, {})
            template = None
            for locale in locale_candidates(person.get("locale"), project.locale):
                template = choices.get(locale.lower())
                if template is not None:
                    break
            if template is None:
                c.result = DeliveryResult(Outcome.PERMANENT, reason="template_missing")
                continue
            template_id, compiled = template
            if isinstance(compiled, RenderError):
                c.result = DeliveryResult(Outcome.PERMANENT, reason=compiled.reason)
                continue
            context = dict(c.context or {})
            roots = {
                "user": person,
                "event": context.get("event") or {},
                "journey": context.get("journey") or {},
                "project": {
                    "id": project.id,
                    "name": project.name,
                    "locale": project.locale,
                    "timezone": project.timezone,
                },
                "context": {
                    **(context.get("context") or {}),
                    "campaign_id": c.campaign_id,
                    "template_id": template_id,
                    "subscription_id": c.subscription_id,
                    "send_id": c.id,
                },
            }
            recipient = {
                "email": person.get("email"),
                "phone": person.get("phone"),
                **tokens.get(c.profile_id, {}),
            }
            try:
                message = compiled.render(roots, recipient=recipient)
            except RenderError as exc:
                c.result = DeliveryResult(Outcome.PERMANENT, reason=exc.reason)
                continue
            if isinstance(message, EmailMessage) and self.tracker is not None:
                ref = TrackingRef(
                    project_id=c.project_id,
                    profile_id=c.profile_id,
                    campaign_id=c.campaign_id,
                    send_id=c.id,
                    subscription_id=c.subscription_id,
                    channel=c.channel,
                    journey_id=c.journey_id,
                    step_id=c.step_id,
                )
                message = self.tracker.decorate_email(message, ref)
            c.message = message

    def _campaign_templates(
        self, conn: Connection, campaign_ids: set[int]
    ) -> dict[int, dict[str, tuple[int, CompiledTemplate | RenderError]]]:
        out: dict[int, dict[str, tuple[int, CompiledTemplate | RenderError]]] = {}
        for row in conn.execute(
            sa.select(
                templates.c.id,
                templates.c.campaign_id,
                templates.c.type,
                templates.c.locale,
                templates.c.updated_at,
            ).where(templates.c.campaign_id.in_(campaign_ids))
        ):
            cached = self._templates.get(row.id)
            if cached is None or cached[0] != row.updated_at:
                full = conn.execute(
                    sa.select(templates.c.data, templates.c.compiled).where(
                        templates.c.id == row.id
                    )
                ).one()
                try:
                    compiled: CompiledTemplate | RenderError = compile_template(
                        row.type, full.data, full.compiled
                    )
                except RenderError as exc:
                    compiled = exc
                cached = (row.updated_at, compiled)
                self._templates[row.id] = cached
            out.setdefault(row.campaign_id, {})[row.locale.lower()] = (row.id, cached[1])
        return out

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

    async def _send(self, round_: _Round) -> None:
        pending = [c for c in round_.claimed if c.result is None]
        self._render(pending)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(c: _Claimed) -> None:
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

    def _record(self, round_: _Round, now: int) -> None:
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
        self, conn: Connection, final: list[_Claimed], retry: list[_Claimed], now: int
    ) -> None:
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
                wait = backoff(c.attempts, self.rng, base=self.config.backoff_base)
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
        self._events(conn, accepted + failed, now)

    def _events(self, conn: Connection, items: list[_Claimed], now: int) -> None:
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

    # -- crash recovery -------------------------------------------------------------------------

    def reap(self, now: int) -> int:
        """Sends whose claim expired while ``sending``: failed, ``interrupted`` (at most
        once: they are never sent again). How many."""
        with self.reader.connect() as conn:
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
            _Claimed(
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
        with self.writer.begin() as conn:
            query = sa.select(sends.c.id).where(
                sends.c.id.in_([i.id for i in items]),
                sends.c.state == "sending",
                sends.c.claimed_until < now,
            )
            if is_postgres(conn):
                query = query.with_for_update(skip_locked=True)
            still = set(conn.execute(query).scalars())
            items = [i for i in items if i.id in still]
            self._record_outcomes(conn, items, [], now)
        if items:
            logger.warning("%d sends were interrupted by a stopped worker", len(items))
        return len(items)

    async def aclose(self) -> None:
        for _, adapter in self._adapters.values():
            try:
                await adapter.aclose()
            except Exception:
                logger.warning("closing a provider adapter failed", exc_info=True)
        self._adapters.clear()
