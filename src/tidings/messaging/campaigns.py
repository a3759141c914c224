"""Providers, campaigns and templates: their storage and the rules of changing them.

The API (api/campaigns.py, api/providers.py, api/templates.py) validates the wire shapes
and calls these; the delivery worker reads them. ``CampaignStore`` is one object made of
three parts: providers (messaging/provider_rows.py, with their write-only secrets),
templates (messaging/template_rows.py) and campaigns, their states, counters and sends
(here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.errors import Conflict, NotFound, ValidationFailed
from tidings.domain.messaging import check_transition
from tidings.messaging.paging import Page, id_page
from tidings.messaging.provider_rows import (
    MASK,
    ProviderRows,
    merge_provider_data,
    present_provider_data,
)
from tidings.messaging.sql import insert_ignoring
from tidings.messaging.store_rows import Then, row_of
from tidings.messaging.template_rows import TemplateRows
from tidings.store.tables import lists, profiles
from tidings.store.tables_messaging import (
    campaign_stats,
    campaigns,
    providers,
    sends,
    subscription_types,
    templates,
)

__all__ = [
    "MASK",
    "CampaignStore",
    "Page",
    "merge_provider_data",
    "present_provider_data",
]


class CampaignStore(ProviderRows, TemplateRows):
    """Providers (provider_rows.py), templates (template_rows.py) and campaigns (here)."""

    # -- campaigns ---------------------------------------------------------------------------

    def _check_refs(self, conn: Connection, project_id: int, values: Mapping[str, Any]) -> None:
        channel = values["channel"]
        sub = conn.execute(
            sa.select(subscription_types.c.channel).where(
                subscription_types.c.project_id == project_id,
                subscription_types.c.id == values["subscription_id"],
            )
        ).scalar_one_or_none()
        if sub is None:
            raise ValidationFailed(
                f"No subscription type {values['subscription_id']}.", param="subscription_id"
            )
        if sub != channel:
            raise ValidationFailed(
                f"Subscription type {values['subscription_id']} is for {sub}, not {channel}.",
                param="subscription_id",
            )
        provider_id = values.get("provider_id")
        if provider_id is not None:
            row = conn.execute(
                sa.select(providers.c.channel, providers.c.type).where(
                    providers.c.project_id == project_id, providers.c.id == provider_id
                )
            ).first()
            if row is None:
                raise ValidationFailed(f"No provider {provider_id}.", param="provider_id")
            if row.type != "logger" and row.channel != channel:
                raise ValidationFailed(
                    f"Provider {provider_id} sends {row.channel}, not {channel}.",
                    param="provider_id",
                )
        for param in ("list_ids", "exclusion_list_ids"):
            ids = list(values.get(param) or [])
            if ids:
                found = set(
                    conn.execute(
                        sa.select(lists.c.id).where(
                            lists.c.project_id == project_id,
                            lists.c.id.in_(ids),
                            lists.c.deleted_at.is_(None),
                        )
                    ).scalars()
                )
                missing = [i for i in ids if i not in found]
                if missing:
                    raise ValidationFailed(f"No list {missing[0]}.", param=param)

    def campaigns(self, project_id: int, limit: int, cursor: str | None) -> Page:
        query = sa.select(campaigns).where(
            campaigns.c.project_id == project_id, campaigns.c.deleted_at.is_(None)
        )
        with self.reader.connect() as conn:
            return id_page(conn, query, campaigns.c.id, limit, cursor)

    def campaign(
        self, project_id: int, campaign_id: int, conn: Connection | None = None
    ) -> dict[str, Any]:
        query = sa.select(campaigns).where(
            campaigns.c.project_id == project_id,
            campaigns.c.id == campaign_id,
            campaigns.c.deleted_at.is_(None),
        )
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.reader.connect() as own:
                row = own.execute(query).first()
        if row is None:
            raise NotFound(f"No campaign {campaign_id}.", param="id")
        return dict(row._mapping)

    def create_campaign(
        self, project_id: int, values: Mapping[str, Any], *, then: Then | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        row = {
            "list_ids": [],
            "exclusion_list_ids": [],
            "send_in_user_timezone": False,
            "tags": [],
            **values,
            "project_id": project_id,
            "state": "draft",
            "loaded": 0,
            "created_at": now,
            "updated_at": now,
        }
        with self.writer.begin() as conn:
            self._check_refs(conn, project_id, row)
            new_id = conn.execute(sa.insert(campaigns).returning(campaigns.c.id), row).scalar_one()
            if then is not None:
                then(conn, row_of(conn, campaigns, new_id))
        return self.campaign(project_id, new_id)

    def update_campaign(
        self, project_id: int, campaign_id: int, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self.clock()
        changes = dict(values)
        wanted = changes.pop("state", None)
        with self.writer.begin() as conn:
            current = self.campaign(project_id, campaign_id, conn)
            merged = {**current, **changes}
            editable = current["state"] == "draft" or (
                current["type"] == "trigger" and current["state"] == "running"
            )
            structural = {"channel", "type", "list_ids", "exclusion_list_ids", "subscription_id"}
            if not editable and structural & set(changes):
                raise Conflict(
                    f"Campaign {campaign_id} is {current['state']}: only a draft's "
                    "channel, lists and subscription can change.",
                    param="state",
                )
            if changes:
                self._check_refs(conn, project_id, merged)
            if wanted is not None:
                check_transition(current["type"], current["state"], wanted)
                if wanted == "scheduled":
                    if merged.get("send_at") is None:
                        raise ValidationFailed("A scheduled blast needs send_at.", param="send_at")
                    if not merged["list_ids"]:
                        raise ValidationFailed("A blast needs list_ids.", param="list_ids")
                    changes.update(load_cursor=None, loaded=0)
                if wanted == "aborting":
                    conn.execute(
                        sa.update(sends)
                        .where(sends.c.campaign_id == campaign_id, sends.c.state == "pending")
                        .values(state="skipped", reason="aborted", updated_at=now)
                    )
                changes["state"] = wanted
            if changes:
                conn.execute(
                    sa.update(campaigns)
                    .where(campaigns.c.id == campaign_id)
                    .values(**changes, updated_at=now)
                )
        return self.campaign(project_id, campaign_id)

    def delete_campaign(self, project_id: int, campaign_id: int) -> None:
        with self.writer.begin() as conn:
            current = self.campaign(project_id, campaign_id, conn)
            if current["state"] in ("scheduled", "loading", "running", "aborting"):
                raise Conflict(
                    f"Campaign {campaign_id} is {current['state']}: abort it first.",
                    param="state",
                )
            now = self.clock()
            conn.execute(
                sa.update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(deleted_at=now, updated_at=now)
            )

    def duplicate_campaign(self, project_id: int, campaign_id: int) -> dict[str, Any]:
        now = self.clock()
        with self.writer.begin() as conn:
            current = self.campaign(project_id, campaign_id, conn)
            row = {
                key: current[key]
                for key in (
                    "type",
                    "channel",
                    "subscription_id",
                    "provider_id",
                    "list_ids",
                    "exclusion_list_ids",
                    "send_in_user_timezone",
                    "tags",
                )
            }
            row.update(
                project_id=project_id,
                name=f"{current['name']} (copy)"[:255],
                state="draft",
                loaded=0,
                created_at=now,
                updated_at=now,
            )
            new_id = conn.execute(sa.insert(campaigns).returning(campaigns.c.id), row).scalar_one()
            for t in conn.execute(
                sa.select(templates).where(templates.c.campaign_id == campaign_id)
            ).all():
                conn.execute(
                    sa.insert(templates),
                    {
                        "project_id": project_id,
                        "campaign_id": new_id,
                        "type": t.type,
                        "locale": t.locale,
                        "data": t.data,
                        "compiled": t.compiled,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
        return self.campaign(project_id, new_id)

    @staticmethod
    def bump_stat(conn: Connection, campaign_id: int, name: str, by: int = 1) -> None:
        """Add to one of a campaign's tracking counters (``opens``, ``clicks``,
        ``bounced``, ``unsubscribed``) in the caller's transaction: what tracking calls
        when it records an open, a click, a bounce."""
        if name not in ("opens", "clicks", "bounced", "unsubscribed"):
            raise ValueError(f"unknown campaign counter {name!r}")
        insert_ignoring(
            conn,
            campaign_stats,
            {"campaign_id": campaign_id, "opens": 0, "clicks": 0, "bounced": 0, "unsubscribed": 0},
            ("campaign_id",),
        )
        column = campaign_stats.c[name]
        conn.execute(
            sa.update(campaign_stats)
            .where(campaign_stats.c.campaign_id == campaign_id)
            .values({name: column + by})
        )

    def delivery(self, campaign_id: int) -> dict[str, int]:
        with self.reader.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(
                    sa.select(sends.c.state, sa.func.count())
                    .where(sends.c.campaign_id == campaign_id)
                    .group_by(sends.c.state)
                ).all()
            )
            stats = conn.execute(
                sa.select(campaign_stats).where(campaign_stats.c.campaign_id == campaign_id)
            ).first()
        return {
            "total": sum(counts.values()),
            "pending": counts.get("pending", 0) + counts.get("sending", 0),
            "sent": counts.get("sent", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "opens": stats.opens if stats else 0,
            "clicks": stats.clicks if stats else 0,
            "bounced": stats.bounced if stats else 0,
            "unsubscribed": stats.unsubscribed if stats else 0,
        }

    def sends_page(
        self, campaign_id: int, state: str | None, limit: int, cursor: str | None
    ) -> Page:
        query = (
            sa.select(
                sends.c.id,
                profiles.c.external_id,
                sends.c.profile_id,
                sends.c.state,
                sends.c.reason,
                sends.c.sent_at,
                sends.c.attempts,
                sends.c.reference,
            )
            .select_from(sends.outerjoin(profiles, profiles.c.id == sends.c.profile_id))
            .where(sends.c.campaign_id == campaign_id)
        )
        if state is not None:
            states = ("pending", "sending") if state == "pending" else (state,)
            query = query.where(sends.c.state.in_(states))
        with self.reader.connect() as conn:
            return id_page(conn, query, sends.c.id, limit, cursor)
