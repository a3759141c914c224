"""Providers, campaigns and templates: their storage and the rules of changing them.

The API (api/campaigns.py, api/providers.py, api/templates.py) validates the wire shapes
and calls these; the delivery worker reads them. Secrets in a provider's ``data`` are
kept as given and answered masked (``present_provider_data``); a PATCH that sends the mask
back keeps the stored value (``merge_provider_data``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import Conflict, NotFound, ValidationFailed
from tidings.domain.messaging import check_transition
from tidings.messaging.sql import insert_ignoring
from tidings.messaging.templates import prepare
from tidings.store import cursors
from tidings.store.database import Writer
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

MASK = "********"
_SECRET_WORDS = ("password", "secret", "token", "credential", "private", "auth", "api_key")
_NOT_SECRET = frozenset({"key_id", "team_id", "username", "account_sid", "topic"})


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    if lowered in _NOT_SECRET:
        return False
    return any(word in lowered for word in _SECRET_WORDS) or lowered in ("key", "apikey")


def present_provider_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as answered: every secret replaced by the mask."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if _is_secret(key) and value not in (None, ""):
            out[key] = MASK
        elif isinstance(value, Mapping):
            out[key] = present_provider_data(value)
        else:
            out[key] = value
    return out


def merge_provider_data(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` a PATCH sets: the mask keeps the stored secret."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        if value == MASK and key in old:
            out[key] = old[key]
        elif isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            out[key] = merge_provider_data(old[key], value)
        else:
            out[key] = value
    return out


# Called inside a create's transaction with the new row (an Idempotency-Key's stored
# answer is written there, so that a retry replays it and a race has one winner).
Then = Callable[[Connection, dict[str, Any]], None]


def _row(conn: Connection, table: sa.Table, row_id: int) -> dict[str, Any]:
    return dict(conn.execute(sa.select(table).where(table.c.id == row_id)).one()._mapping)


@dataclass(frozen=True, slots=True)
class Page:
    results: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


def _cursor(raw: str | None) -> int | None:
    """The id a page continues below (``store.cursors``: a bad cursor is a 400)."""
    if raw is None or raw == "":
        return None
    (before,) = cursors.decode(raw, tuple[int])
    return int(before)


def _page(rows: Sequence[Any], limit: int, cursor: int | None, key: Callable[[Any], int]) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        results=[dict(r._mapping) for r in rows],
        next_cursor=cursors.encode(key(rows[-1])) if more and rows else None,
        prev_cursor=cursors.encode(key(rows[0]) + 1) if cursor is not None and rows else None,
        limit=limit,
    )


class CampaignStore:
    def __init__(
        self, writer: Writer, reader: Engine, *, clock: Callable[[], int] | None = None
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.clock = clock or (lambda: time.time_ns() // 1000)

    # -- providers ----------------------------------------------------------------------------

    def providers(self, project_id: int, limit: int, cursor: str | None) -> Page:
        after = _cursor(cursor)
        query = sa.select(providers).where(providers.c.project_id == project_id)
        if after is not None:
            query = query.where(providers.c.id < after)
        with self.reader.connect() as conn:
            rows = conn.execute(query.order_by(providers.c.id.desc()).limit(limit + 1)).all()
        return _page(rows, limit, after, lambda r: r.id)

    def provider(self, project_id: int, provider_id: int) -> dict[str, Any]:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(providers).where(
                    providers.c.project_id == project_id, providers.c.id == provider_id
                )
            ).first()
        if row is None:
            raise NotFound(f"No provider {provider_id}.", param="id")
        return dict(row._mapping)

    def _clear_default(self, conn: Connection, project_id: int, channel: str, keep: int) -> None:
        conn.execute(
            sa.update(providers)
            .where(
                providers.c.project_id == project_id,
                providers.c.channel == channel,
                providers.c.id != keep,
                providers.c.is_default.is_(True),
            )
            .values(is_default=False)
        )

    def create_provider(
        self, project_id: int, values: Mapping[str, Any], *, then: Then | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.writer.begin() as conn:
            new_id = conn.execute(
                sa.insert(providers).returning(providers.c.id),
                {**values, "project_id": project_id, "created_at": now, "updated_at": now},
            ).scalar_one()
            if values.get("is_default"):
                self._clear_default(conn, project_id, values["channel"], new_id)
            if then is not None:
                then(conn, _row(conn, providers, new_id))
        return self.provider(project_id, new_id)

    def update_provider(
        self, project_id: int, provider_id: int, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = self.provider(project_id, provider_id)
        changes = dict(values)
        if "data" in changes:
            changes["data"] = merge_provider_data(current["data"], changes["data"])
        with self.writer.begin() as conn:
            conn.execute(
                sa.update(providers)
                .where(providers.c.id == provider_id)
                .values(**changes, updated_at=self.clock())
            )
            if changes.get("is_default"):
                channel = changes.get("channel", current["channel"])
                self._clear_default(conn, project_id, channel, provider_id)
        return self.provider(project_id, provider_id)

    def delete_provider(self, project_id: int, provider_id: int) -> None:
        self.provider(project_id, provider_id)
        with self.writer.begin() as conn:
            used = conn.execute(
                sa.select(campaigns.c.id)
                .where(
                    campaigns.c.provider_id == provider_id,
                    campaigns.c.deleted_at.is_(None),
                    campaigns.c.state.in_(("scheduled", "loading", "running", "aborting")),
                )
                .limit(1)
            ).first()
            if used is not None:
                raise Conflict(
                    f"Provider {provider_id} is used by campaign {used.id}, which is live."
                )
            conn.execute(sa.delete(providers).where(providers.c.id == provider_id))

    @staticmethod
    def provider_for(
        conn: Connection, project_id: int, channel: str, provider_id: int | None
    ) -> dict[str, Any] | None:
        """The campaign's provider, or the project's default for the channel (the only
        one of that channel, when none is marked default)."""
        if provider_id is not None:
            row = conn.execute(sa.select(providers).where(providers.c.id == provider_id)).first()
            return dict(row._mapping) if row is not None else None
        rows = conn.execute(
            sa.select(providers)
            .where(providers.c.project_id == project_id, providers.c.channel == channel)
            .order_by(providers.c.is_default.desc(), providers.c.id)
        ).all()
        if not rows:
            return None
        if rows[0].is_default or len(rows) == 1:
            return dict(rows[0]._mapping)
        return None

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
        after = _cursor(cursor)
        query = sa.select(campaigns).where(
            campaigns.c.project_id == project_id, campaigns.c.deleted_at.is_(None)
        )
        if after is not None:
            query = query.where(campaigns.c.id < after)
        with self.reader.connect() as conn:
            rows = conn.execute(query.order_by(campaigns.c.id.desc()).limit(limit + 1)).all()
        return _page(rows, limit, after, lambda r: r.id)

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
                then(conn, _row(conn, campaigns, new_id))
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
        after = _cursor(cursor)
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
        if after is not None:
            query = query.where(sends.c.id < after)
        with self.reader.connect() as conn:
            rows = conn.execute(query.order_by(sends.c.id.desc()).limit(limit + 1)).all()
        return _page(rows, limit, after, lambda r: r.id)

    # -- templates ---------------------------------------------------------------------------

    def templates(
        self, project_id: int, limit: int, cursor: str | None, campaign_id: int | None = None
    ) -> Page:
        after = _cursor(cursor)
        query = sa.select(templates).where(templates.c.project_id == project_id)
        if campaign_id is not None:
            query = query.where(templates.c.campaign_id == campaign_id)
        if after is not None:
            query = query.where(templates.c.id < after)
        with self.reader.connect() as conn:
            rows = conn.execute(query.order_by(templates.c.id.desc()).limit(limit + 1)).all()
        return _page(rows, limit, after, lambda r: r.id)

    def template(self, project_id: int, template_id: int) -> dict[str, Any]:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(templates).where(
                    templates.c.project_id == project_id, templates.c.id == template_id
                )
            ).first()
        if row is None:
            raise NotFound(f"No template {template_id}.", param="id")
        return dict(row._mapping)

    def create_template(
        self,
        project_id: int,
        campaign_id: int,
        locale: str,
        data: Mapping[str, Any],
        *,
        then: Then | None = None,
    ) -> dict[str, Any]:
        campaign = self.campaign(project_id, campaign_id)
        compiled = prepare(campaign["channel"], data)
        now = self.clock()
        try:
            with self.writer.begin() as conn:
                new_id = conn.execute(
                    sa.insert(templates).returning(templates.c.id),
                    {
                        "project_id": project_id,
                        "campaign_id": campaign_id,
                        "type": campaign["channel"],
                        "locale": locale,
                        "data": dict(data),
                        "compiled": compiled,
                        "created_at": now,
                        "updated_at": now,
                    },
                ).scalar_one()
                if then is not None:
                    then(conn, _row(conn, templates, new_id))
        except sa.exc.IntegrityError:
            # The (campaign, locale) is taken, or, with an Idempotency-Key, the key was
            # stored meanwhile: the API replays the stored answer if there is one.
            raise Conflict(
                f"Campaign {campaign_id} has a template for locale '{locale}' already.",
                code="resource_already_exists",
                param="locale",
            ) from None
        return self.template(project_id, new_id)

    def update_template(
        self,
        project_id: int,
        template_id: int,
        *,
        locale: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        current = self.template(project_id, template_id)
        changes: dict[str, Any] = {}
        if data is not None:
            changes["compiled"] = prepare(current["type"], data)
            changes["data"] = dict(data)
        if locale is not None:
            changes["locale"] = locale
        if changes:
            try:
                with self.writer.begin() as conn:
                    conn.execute(
                        sa.update(templates)
                        .where(templates.c.id == template_id)
                        .values(**changes, updated_at=self.clock())
                    )
            except sa.exc.IntegrityError:
                raise Conflict(
                    f"The campaign has a template for locale '{locale}' already.",
                    code="resource_already_exists",
                    param="locale",
                ) from None
        return self.template(project_id, template_id)

    def delete_template(self, project_id: int, template_id: int) -> None:
        self.template(project_id, template_id)
        with self.writer.begin() as conn:
            conn.execute(sa.delete(templates).where(templates.c.id == template_id))
