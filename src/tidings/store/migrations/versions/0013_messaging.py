"""Messaging: providers, subscription types and states, campaigns, templates, the outbox
(``sends``), the facts waiting for the ingest log, installation secrets.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TABLES = (
    "installation_secrets",
    "pending_events",
    "sends",
    "templates",
    "campaign_stats",
    "campaigns",
    "user_subscriptions",
    "subscription_types",
    "provider_windows",
    "providers",
)


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),  # the wire's ``group``
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("rate_limit", sa.Integer, nullable=False),  # 0: none
        sa.Column("rate_interval", sa.String(16), nullable=False),  # second|minute|hour|day
        sa.Column("data", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Index("ix_providers_project", "project_id", "channel"),
    )

    op.create_table(
        "provider_windows",
        sa.Column("provider_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("used", sa.Integer, nullable=False),
    )

    op.create_table(
        "subscription_types",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("requires_opt_in", sa.Boolean, nullable=False),
        # The project's default type of its channel, made with the project (or on first
        # read); unique so that two processes making them at once make one.
        sa.Column("default_channel", sa.String(16), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("project_id", "default_channel", name="uq_subscription_types_default"),
        sa.Index("ix_subscription_types_project", "project_id", "channel"),
    )

    op.create_table(
        "user_subscriptions",
        sa.Column("profile_id", sa.String(32), primary_key=True),
        sa.Column("subscription_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column(
            "state", sa.SmallInteger, nullable=False
        ),  # 0 unsubscribed, 1 subscribed, 2 opted in
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),  # blast | trigger
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("subscription_id", sa.Integer, nullable=False),
        sa.Column("provider_id", sa.Integer, nullable=True),
        sa.Column("list_ids", _JSON, nullable=False),
        sa.Column("exclusion_list_ids", _JSON, nullable=False),
        sa.Column("send_at", sa.BigInteger, nullable=True),
        sa.Column("send_in_user_timezone", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        # A blast's audience is materialised in chunks of profiles in id order: the last id
        # done, and how many sends were queued so far.
        sa.Column("load_cursor", sa.String(32), nullable=True),
        sa.Column("loaded", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("deleted_at", sa.BigInteger, nullable=True),
        sa.Index("ix_campaigns_project", "project_id", "id"),
        sa.Index("ix_campaigns_state", "state"),
    )

    op.create_table(
        "campaign_stats",
        sa.Column("campaign_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("opens", sa.BigInteger, nullable=False),
        sa.Column("clicks", sa.BigInteger, nullable=False),
        sa.Column("bounced", sa.BigInteger, nullable=False),
        sa.Column("unsubscribed", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "templates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("locale", sa.String(255), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        # Email: the HTML that MJML and the CSS inliner made from ``data`` at save time,
        # still Liquid; rendered per recipient.
        sa.Column("compiled", _JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("campaign_id", "locale", name="uq_templates_campaign_locale"),
        sa.Index("ix_templates_project", "project_id", "id"),
    )

    op.create_table(
        "sends",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("subscription_id", sa.Integer, nullable=False),
        sa.Column("profile_id", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        # pending → sending (claimed) → sent | failed | skipped; pending again after a
        # transient failure, with ``due_at`` moved on.
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claimed_until", sa.BigInteger, nullable=True),
        sa.Column("context", _JSON, nullable=True),
        sa.Column("journey_id", sa.Integer, nullable=True),
        sa.Column("step_id", sa.Integer, nullable=True),
        sa.Column("reason", sa.String(512), nullable=True),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("sent_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("campaign_id", "profile_id", "reference", name="uq_sends_reference"),
        sa.Index("ix_sends_due", "state", "due_at"),
        sa.Index("ix_sends_campaign_state", "campaign_id", "state", "id"),
        sa.Index("ix_sends_profile", "project_id", "profile_id", "created_at"),
    )

    op.create_table(
        "pending_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("payload", _JSON, nullable=False),  # an ingest log event, message_id included
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "installation_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for name in _TABLES:
        op.drop_table(name)
