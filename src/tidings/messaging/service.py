"""Messaging's services, wired together: what ``bootstrap`` builds and the API uses."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tidings.domain.errors import NotFound
from tidings.domain.tracking import InAppSink, Tracker
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.delivery import AdapterFactory, Delivery, DeliveryConfig
from tidings.messaging.events import Append, EventOutbox
from tidings.messaging.providers import build_adapter
from tidings.messaging.secrets import InstallationSecrets
from tidings.messaging.sends import OutboxSends
from tidings.messaging.subscriptions import SubscriptionStore
from tidings.messaging.worker import DeliveryWorker
from tidings.store.database import Database
from tidings.store.tables_messaging import providers

__all__ = ["Messaging", "build_messaging"]


@dataclass
class Messaging:
    outbox: EventOutbox
    subscriptions: SubscriptionStore
    campaigns: CampaignStore
    sends: OutboxSends
    secrets: InstallationSecrets
    delivery: Delivery
    worker: DeliveryWorker | None = None  # runs ``delivery`` in this process

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()

    def unsubscribe(
        self, project_id: int, profile_id: str, subscription_id: int | None, campaign_id: int | None
    ) -> None:
        """An unsubscribe link was followed (or posted one-click): the message's
        subscription type, else its campaign's, goes to state 0 for this user."""
        if subscription_id is None and campaign_id is not None:
            try:
                subscription_id = self.campaigns.campaign(project_id, campaign_id)[
                    "subscription_id"
                ]
            except NotFound:
                subscription_id = None
        if subscription_id is None:
            return
        self.subscriptions.set_state(
            None,
            project_id,
            profile_id,
            subscription_id,
            0,
            self.subscriptions.clock(),
            source="unsubscribe_link",
            campaign_id=campaign_id,
        )

    def inbound_provider(self, provider_id: int) -> tuple[int, str, Mapping[str, Any]] | None:
        """(project, type, data with its secrets) of a provider, for its inbound webhook."""
        with self.campaigns.reader.connect() as conn:
            row = conn.execute(
                sa.select(providers.c.project_id, providers.c.type, providers.c.data).where(
                    providers.c.id == provider_id
                )
            ).first()
        return None if row is None else (row.project_id, row.type, row.data)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


def build_messaging(
    db: Database,
    append: Append | None,
    partitions: int,
    *,
    run_delivery: bool,
    on_append: Callable[[], None] | None = None,
    tracker: Tracker | None = None,
    in_app: InAppSink | None = None,
    adapter_factory: AdapterFactory = build_adapter,
    config: DeliveryConfig | None = None,
    clock: Callable[[], int] | None = None,
    allow_private_webhooks: bool = False,
) -> Messaging:
    """``append``: the ingest log's ``append`` (events of sends and subscription changes);
    ``run_delivery``: run the delivery worker in this process (``serve``, ``worker``);
    ``allow_private_webhooks``: ``TIDINGS_WEBHOOK_ALLOW_PRIVATE`` (domain/addresses.py)."""
    if adapter_factory is build_adapter:
        adapter_factory = functools.partial(build_adapter, allow_private=allow_private_webhooks)
    outbox = EventOutbox(db.writer, db.reader, append, partitions, on_append=on_append)
    delivery = Delivery(
        db.writer,
        db.reader,
        outbox,
        tracker=tracker,
        in_app=in_app,
        adapter_factory=adapter_factory,
        config=config,
        clock=clock,
    )
    worker = DeliveryWorker(delivery) if run_delivery else None
    return Messaging(
        outbox=outbox,
        subscriptions=SubscriptionStore(db.writer, db.reader, outbox, clock=clock),
        campaigns=CampaignStore(
            db.writer, db.reader, clock=clock, allow_private_webhooks=allow_private_webhooks
        ),
        sends=OutboxSends(wake=worker.wake if worker is not None else None),
        secrets=InstallationSecrets(db.writer, db.reader),
        delivery=delivery,
        worker=worker,
    )
