"""The tables of the messaging area, on the shared metadata of store/tables.py
(which imports this module, so that migrations and their tests see one schema).

Created by migration 0013. See docs/messaging.md for what each holds; in short:

- ``providers``: configured provider adapters (``data`` holds their secrets as given).
- ``provider_windows``: one counter row per (provider, rate window), shared by every
  worker, so that a provider's rate limit holds across processes.
- ``subscription_types`` and ``user_subscriptions``: the types of a project and each
  profile's recorded state (no row: subscribed unless the type requires an opt-in).
- ``campaigns``, ``templates`` (one per campaign and locale), ``campaign_stats`` (the
  tracking counters: opens, clicks, bounces, unsubscribes).
- ``sends``: the outbox, one row per (campaign, profile, reference).
- ``pending_events``: facts to append to the ingest log (sends' outcomes, subscription
  changes), written in the transaction of the change they describe and deleted once
  appended: a crash between the two appends them again, under the same message id.
- ``installation_secrets``: signing keys made on first use, shared by every process.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidings.store.tables import Json, Micros, metadata

__all__ = [
    "campaign_stats",
    "campaigns",
    "installation_secrets",
    "pending_events",
    "provider_windows",
    "providers",
    "sends",
    "subscription_types",
    "templates",
    "user_subscriptions",
]

providers = sa.Table(
    "providers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),  # the wire's ``group``
    sa.Column("is_default", sa.Boolean, nullable=False),
    sa.Column("rate_limit", sa.Integer, nullable=False),  # 0: none
    sa.Column("rate_interval", sa.String(16), nullable=False),  # second|minute|hour|day
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Index("ix_providers_project", "project_id", "channel"),
)

provider_windows = sa.Table(
    "provider_windows",
    metadata,
    sa.Column("provider_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("window_start", Micros, primary_key=True, autoincrement=False),
    sa.Column("used", sa.Integer, nullable=False),
)

subscription_types = sa.Table(
    "subscription_types",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("is_public", sa.Boolean, nullable=False),
    sa.Column("requires_opt_in", sa.Boolean, nullable=False),
    # The project's default type of its channel, made with the project (or on first
    # read); unique so that two processes making them at once make one.
    sa.Column("default_channel", sa.String(16), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.UniqueConstraint("project_id", "default_channel", name="uq_subscription_types_default"),
    sa.Index("ix_subscription_types_project", "project_id", "channel"),
)

user_subscriptions = sa.Table(
    "user_subscriptions",
    metadata,
    sa.Column("profile_id", sa.String(32), primary_key=True),
    sa.Column("subscription_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),  # 0 unsubscribed, 1 subscribed, 2 opted in
    sa.Column("updated_at", Micros, nullable=False),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # blast | trigger
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("subscription_id", sa.Integer, nullable=False),
    sa.Column("provider_id", sa.Integer, nullable=True),
    sa.Column("list_ids", Json, nullable=False),
    sa.Column("exclusion_list_ids", Json, nullable=False),
    sa.Column("send_at", Micros, nullable=True),
    sa.Column("send_in_user_timezone", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tags", Json, nullable=False),
    # A blast's audience is materialised in chunks of profiles in id order: the last id
    # done, and how many sends were queued so far.
    sa.Column("load_cursor", sa.String(32), nullable=True),
    sa.Column("loaded", sa.BigInteger, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("deleted_at", Micros, nullable=True),
    sa.Index("ix_campaigns_project", "project_id", "id"),
    sa.Index("ix_campaigns_state", "state"),
)

campaign_stats = sa.Table(
    "campaign_stats",
    metadata,
    sa.Column("campaign_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("opens", sa.BigInteger, nullable=False),
    sa.Column("clicks", sa.BigInteger, nullable=False),
    sa.Column("bounced", sa.BigInteger, nullable=False),
    sa.Column("unsubscribed", sa.BigInteger, nullable=False),
)

templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("locale", sa.String(255), nullable=False),
    sa.Column("data", Json, nullable=False),
    # Email: the HTML that MJML and the CSS inliner made from ``data`` at save time,
    # still Liquid; rendered per recipient.
    sa.Column("compiled", Json, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.UniqueConstraint("campaign_id", "locale", name="uq_templates_campaign_locale"),
    sa.Index("ix_templates_project", "project_id", "id"),
)

sends = sa.Table(
    "sends",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("campaign_id", sa.Integer, nullable=False),
    sa.Column("subscription_id", sa.Integer, nullable=False),
    sa.Column("profile_id", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(255), nullable=False),
    # pending → sending (claimed) → sent | failed | skipped; pending again after a
    # transient failure, with ``due_at`` moved on.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("due_at", Micros, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("claimed_until", Micros, nullable=True),
    sa.Column("context", Json, nullable=True),
    sa.Column("journey_id", sa.Integer, nullable=True),
    sa.Column("step_id", sa.Integer, nullable=True),
    sa.Column("reason", sa.String(512), nullable=True),
    sa.Column("provider_message_id", sa.String(255), nullable=True),
    sa.Column("sent_at", Micros, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.UniqueConstraint("campaign_id", "profile_id", "reference", name="uq_sends_reference"),
    sa.Index("ix_sends_due", "state", "due_at"),
    sa.Index("ix_sends_campaign_state", "campaign_id", "state", "id"),
    sa.Index("ix_sends_profile", "project_id", "profile_id", "created_at"),
)

pending_events = sa.Table(
    "pending_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("project_id", sa.Integer, nullable=False),
    sa.Column("payload", Json, nullable=False),  # an ingest log event, message_id included
    sa.Column("created_at", Micros, nullable=False),
)

installation_secrets = sa.Table(
    "installation_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)
