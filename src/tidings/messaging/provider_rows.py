"""Providers' rows: listing, creating, changing and deleting them, the default provider of
a channel, and their secrets (kept as given, answered masked: ``present_provider_data``;
a PATCH that sends the mask back keeps the stored value: ``merge_provider_data``).
``CampaignStore`` (messaging/campaigns.py) is made of this, its campaigns and templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.errors import Conflict
from tidings.messaging.paging import Page, id_page
from tidings.messaging.store_rows import Rows, Then, row_of
from tidings.store.tables_messaging import campaigns, providers

__all__ = ["MASK", "ProviderRows", "merge_provider_data", "present_provider_data"]

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


class ProviderRows(Rows):
    # -- providers ----------------------------------------------------------------------------

    def providers(self, project_id: int, limit: int, cursor: str | None) -> Page:
        query = sa.select(providers).where(providers.c.project_id == project_id)
        with self.reader.connect() as conn:
            return id_page(conn, query, providers.c.id, limit, cursor)

    def provider(self, project_id: int, provider_id: int) -> dict[str, Any]:
        return self._one(providers, project_id, provider_id, "provider")

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
                then(conn, row_of(conn, providers, new_id))
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
