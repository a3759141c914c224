"""Subscription types and each user's state, and the rule that nothing is sent to the
unsubscribed.

Who calls it: the subscription routes and the preference centre (api/subscriptions.py),
the unsubscribe pages and the SMS STOP webhook (tracking), and the delivery worker,
which reads the states of the users it claims.

Why an unsubscribe cannot lose a race with a send: ``set_state`` first takes a lock on
the user (``pg_advisory_xact_lock`` on PostgreSQL, held until it commits; SQLite has one
writer at a time), writes the state, then locks the user's queued sends of that type
(``FOR UPDATE``) and marks the pending ones ``skipped``. A claim (messaging/delivery.py)
only keeps users whose lock it gets at once (``pg_try_advisory_xact_lock``) and reads
their states after that. So either the claim comes first (its sends are ``sending``;
the unsubscribe waits on their row locks, then for them to finish before it answers:
``settle``), or the unsubscribe does (the claim leaves the user alone this round, and
the next one reads state 0). When ``set_state`` returns, nothing more will be sent for
that type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import NotFound, ValidationFailed
from tidings.domain.messaging import CHANNELS, SubscriptionState
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.events import EventOutbox, event_payload, identities_of
from tidings.messaging.sql import insert_ignoring, is_postgres, lock_profile
from tidings.store.database import Writer
from tidings.store.tables import profiles
from tidings.store.tables_messaging import (
    sends,
    subscription_types,
    user_subscriptions,
)

__all__ = ["StateChange", "SubscriptionStore", "SubscriptionType"]

_DEFAULT_NAMES = {
    "email": "Email",
    "text": "Text messages",
    "push": "Push notifications",
    "webhook": "Webhooks",
    "in_app": "In-app messages",
}


@dataclass(frozen=True, slots=True)
class SubscriptionType:
    id: int
    project_id: int
    name: str
    channel: str
    is_public: bool
    requires_opt_in: bool
    is_default: bool
    created_at: int
    updated_at: int


@dataclass(slots=True)
class StateChange:
    """What ``set_state`` did: ``changed`` when the state differs from before;
    ``in_flight``: sends claimed before an unsubscribe, to wait for (``settle``)."""

    changed: bool
    previous: int | None
    in_flight: list[int] = field(default_factory=list)


def _type(row: Any) -> SubscriptionType:
    return SubscriptionType(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        channel=row.channel,
        is_public=row.is_public,
        requires_opt_in=row.requires_opt_in,
        is_default=row.default_channel is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SubscriptionStore:
    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        outbox: EventOutbox,
        *,
        clock: Callable[[], int] | None = None,
        settle_timeout: float = 30.0,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.outbox = outbox
        self.clock = clock or (lambda: time.time_ns() // 1000)
        self.settle_timeout = settle_timeout

    # -- types ------------------------------------------------------------------------------

    @staticmethod
    def ensure_defaults(conn: Connection, project_id: int, now: int) -> None:
        """One default type per channel for the project (made once, whoever asks first)."""
        have = set(
            conn.execute(
                sa.select(subscription_types.c.default_channel).where(
                    subscription_types.c.project_id == project_id,
                    subscription_types.c.default_channel.is_not(None),
                )
            ).scalars()
        )
        rows = [
            {
                "project_id": project_id,
                "name": _DEFAULT_NAMES[channel],
                "channel": channel,
                "is_public": True,
                "requires_opt_in": False,
                "default_channel": channel,
                "created_at": now,
                "updated_at": now,
            }
            for channel in CHANNELS
            if channel not in have
        ]
        insert_ignoring(conn, subscription_types, rows, ("project_id", "default_channel"))

    def _defaults_made(self, project_id: int) -> None:
        with self.reader.connect() as conn:
            count = conn.execute(
                sa.select(sa.func.count()).where(
                    subscription_types.c.project_id == project_id,
                    subscription_types.c.default_channel.is_not(None),
                )
            ).scalar_one()
        if count < len(CHANNELS):
            with self.writer.begin() as conn:
                self.ensure_defaults(conn, project_id, self.clock())

    def types(self, project_id: int) -> list[SubscriptionType]:
        self._defaults_made(project_id)
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(subscription_types)
                .where(subscription_types.c.project_id == project_id)
                .order_by(subscription_types.c.id)
            ).all()
        return [_type(r) for r in rows]

    def get_type(self, project_id: int, subscription_id: int) -> SubscriptionType:
        self._defaults_made(project_id)
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(subscription_types).where(
                    subscription_types.c.project_id == project_id,
                    subscription_types.c.id == subscription_id,
                )
            ).first()
        if row is None:
            raise NotFound(f"No subscription type {subscription_id}.", param="subscription_id")
        return _type(row)

    def default_for(self, project_id: int, channel: str) -> SubscriptionType:
        return next(t for t in self.types(project_id) if t.is_default and t.channel == channel)

    def create_type(
        self, project_id: int, *, name: str, channel: str, is_public: bool, requires_opt_in: bool
    ) -> SubscriptionType:
        now = self.clock()
        with self.writer.begin() as conn:
            self.ensure_defaults(conn, project_id, now)
            new_id = conn.execute(
                sa.insert(subscription_types).returning(subscription_types.c.id),
                {
                    "project_id": project_id,
                    "name": name,
                    "channel": channel,
                    "is_public": is_public,
                    "requires_opt_in": requires_opt_in,
                    "default_channel": None,
                    "created_at": now,
                    "updated_at": now,
                },
            ).scalar_one()
        return self.get_type(project_id, new_id)

    def update_type(self, project_id: int, subscription_id: int, **values: Any) -> SubscriptionType:
        self.get_type(project_id, subscription_id)
        if values:
            with self.writer.begin() as conn:
                conn.execute(
                    sa.update(subscription_types)
                    .where(
                        subscription_types.c.project_id == project_id,
                        subscription_types.c.id == subscription_id,
                    )
                    .values(**values, updated_at=self.clock())
                )
        return self.get_type(project_id, subscription_id)

    # -- user states --------------------------------------------------------------------------

    def states(self, project_id: int, profile_id: str) -> list[dict[str, Any]]:
        """Every type of the project with the user's state (recorded, or what it counts as)."""
        types = self.types(project_id)
        with self.reader.connect() as conn:
            recorded = dict(
                conn.execute(
                    sa.select(
                        user_subscriptions.c.subscription_id, user_subscriptions.c.state
                    ).where(user_subscriptions.c.profile_id == profile_id)
                ).all()
            )
        out = []
        for t in types:
            state = recorded.get(t.id)
            if state is None:
                state = 0 if t.requires_opt_in else 1
            out.append(
                {
                    "subscription_id": t.id,
                    "name": t.name,
                    "channel": t.channel,
                    "is_public": t.is_public,
                    "requires_opt_in": t.requires_opt_in,
                    "state": int(state),
                }
            )
        return out

    def set_state(
        self,
        conn_or_none: Connection | None,
        project_id: int,
        profile_id: str,
        subscription_id: int,
        state: int,
        now: int,
        *,
        source: str,
        campaign_id: int | None = None,
    ) -> StateChange:
        """Record a user's state for one type and the ``subscribed`` / ``unsubscribed``
        event (when the state changes). With a connection, in the caller's transaction:
        the caller then calls ``settle(change)`` after its commit. Without one, in a
        transaction of its own, settled before it returns."""
        if conn_or_none is not None:
            return self._set(
                conn_or_none,
                project_id,
                profile_id,
                subscription_id,
                state,
                now,
                source=source,
                campaign_id=campaign_id,
            )
        with self.writer.begin() as conn:
            change = self._set(
                conn,
                project_id,
                profile_id,
                subscription_id,
                state,
                now,
                source=source,
                campaign_id=campaign_id,
            )
        self.settle(change)
        return change

    def set_many(
        self,
        project_id: int,
        changes: Sequence[tuple[str, int, int]],
        now: int,
        *,
        source: str,
    ) -> list[StateChange]:
        """Several (profile, type, state) changes in one transaction, then settled."""
        with self.writer.begin() as conn:
            results = [
                self._set(conn, project_id, p, s, st, now, source=source) for p, s, st in changes
            ]
        for change in results:
            self.settle(change, flush=False)
        self._flush()
        return results

    def _set(
        self,
        conn: Connection,
        project_id: int,
        profile_id: str,
        subscription_id: int,
        state: int,
        now: int,
        *,
        source: str,
        campaign_id: int | None = None,
    ) -> StateChange:
        if state not in (0, 1, 2):
            raise ValidationFailed("A state is 0, 1 or 2.", param="state")
        lock_profile(conn, profile_id)  # until commit: claims leave this user's sends alone
        kind = conn.execute(
            sa.select(subscription_types.c.channel).where(
                subscription_types.c.project_id == project_id,
                subscription_types.c.id == subscription_id,
            )
        ).scalar_one_or_none()
        if kind is None:
            raise NotFound(f"No subscription type {subscription_id}.", param="subscription_id")
        exists = conn.execute(
            sa.select(profiles.c.id).where(
                profiles.c.id == profile_id, profiles.c.project_id == project_id
            )
        ).scalar_one_or_none()
        if exists is None:
            raise NotFound("No such user.", param="external_id")
        previous = conn.execute(
            sa.select(user_subscriptions.c.state).where(
                user_subscriptions.c.profile_id == profile_id,
                user_subscriptions.c.subscription_id == subscription_id,
            )
        ).scalar_one_or_none()
        change = StateChange(changed=previous != state, previous=previous)
        if previous is None:
            inserted = insert_ignoring(
                conn,
                user_subscriptions,
                {
                    "profile_id": profile_id,
                    "subscription_id": subscription_id,
                    "project_id": project_id,
                    "state": state,
                    "updated_at": now,
                },
                ("profile_id", "subscription_id"),
                returning=user_subscriptions.c.subscription_id,
            )
            if not inserted:  # someone recorded one meanwhile: ours is the later word
                previous = -1
        if previous is not None and previous != state:
            conn.execute(
                sa.update(user_subscriptions)
                .where(
                    user_subscriptions.c.profile_id == profile_id,
                    user_subscriptions.c.subscription_id == subscription_id,
                )
                .values(state=state, updated_at=now)
            )
        if state == SubscriptionState.UNSUBSCRIBED:
            change.in_flight = self._stop_sends(conn, profile_id, subscription_id, now)
            if campaign_id is not None and change.changed:
                CampaignStore.bump_stat(conn, campaign_id, "unsubscribed")
        if change.changed:
            identity = identities_of(conn, project_id, [profile_id]).get(profile_id)
            if identity is not None:
                name = "unsubscribed" if state == 0 else "subscribed"
                data: dict[str, Any] = {
                    "subscription_id": subscription_id,
                    "channel": kind,
                    "state": state,
                    "source": source,
                }
                if campaign_id is not None:
                    data["campaign_id"] = campaign_id
                message_id = f"sub_{profile_id}_{subscription_id}_{state}_{now}"
                EventOutbox.add(
                    conn, project_id, [event_payload(name, identity, data, message_id, now)], now
                )
        return change

    @staticmethod
    def _stop_sends(conn: Connection, profile_id: str, subscription_id: int, now: int) -> list[int]:
        """Lock the user's queued sends of this type (a claim holding them finishes
        first), skip the pending ones; the ids of those already claimed."""
        query = sa.select(sends.c.id, sends.c.state).where(
            sends.c.profile_id == profile_id,
            sends.c.subscription_id == subscription_id,
            sends.c.state.in_(("pending", "sending")),
        )
        if is_postgres(conn):
            query = query.order_by(sends.c.id).with_for_update()
        rows = conn.execute(query).all()
        pending = [r.id for r in rows if r.state == "pending"]
        if pending:
            conn.execute(
                sa.update(sends)
                .where(sends.c.id.in_(pending), sends.c.state == "pending")
                .values(state="skipped", reason="unsubscribed", updated_at=now)
            )
        return [r.id for r in rows if r.state == "sending"]

    def settle(self, change: StateChange, *, flush: bool = True) -> None:
        """After the commit of a ``set_state``: append its event, and wait (bounded) until
        the sends claimed before an unsubscribe are finished, so that when the caller
        answers, no message of that type is on its way to the user."""
        if flush:
            self._flush()
        if not change.in_flight:
            return
        deadline = time.monotonic() + self.settle_timeout
        waiting = list(change.in_flight)
        while waiting and time.monotonic() < deadline:
            with self.reader.connect() as conn:
                waiting = list(
                    conn.execute(
                        sa.select(sends.c.id).where(
                            sends.c.id.in_(waiting), sends.c.state == "sending"
                        )
                    ).scalars()
                )
            if waiting:
                time.sleep(0.01)
        # Past the deadline a claim is expired: its worker no longer sends it (delivery.py).

    def _flush(self) -> None:
        try:
            self.outbox.flush()
        except Exception:  # the worker's periodic flush appends it later
            import logging

            logging.getLogger(__name__).warning("appending events failed", exc_info=True)

    def unsubscribe_channel_by_phone(
        self, project_id: int, phone: str, channel: str = "text", now: int | None = None
    ) -> int:
        """Unsubscribe every user with this phone (E.164) from every type of ``channel``
        (SMS STOP); how many users."""
        when = now if now is not None else self.clock()
        types = [t.id for t in self.types(project_id) if t.channel == channel]
        with self.reader.connect() as conn:
            profile_ids = list(
                conn.execute(
                    sa.select(profiles.c.id).where(
                        profiles.c.project_id == project_id, profiles.c.phone == phone
                    )
                ).scalars()
            )
        if profile_ids and types:
            self.set_many(
                project_id,
                [(p, t, 0) for p in profile_ids for t in types],
                when,
                source="sms_stop",
            )
        return len(profile_ids)

    def receiving(
        self, conn: Connection, pairs: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Recorded states of (profile, type) pairs, read in the caller's transaction."""
        found: dict[tuple[str, int], int] = {}
        profile_ids = sorted({p for p, _ in pairs})
        for start in range(0, len(profile_ids), 500):
            for p, s, st in conn.execute(
                sa.select(
                    user_subscriptions.c.profile_id,
                    user_subscriptions.c.subscription_id,
                    user_subscriptions.c.state,
                ).where(user_subscriptions.c.profile_id.in_(profile_ids[start : start + 500]))
            ):
                found[(p, s)] = st
        return found
