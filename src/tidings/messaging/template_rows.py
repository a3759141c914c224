"""Templates' rows: one per (campaign, locale), checked and compiled when saved
(messaging/templates.py). ``CampaignStore`` (messaging/campaigns.py) is made of this, its
providers and campaigns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.addresses import ALLOW_SETTING, blocked_url_reason
from tidings.domain.errors import Conflict, FieldError, ValidationFailed
from tidings.messaging.paging import Page, id_page
from tidings.messaging.store_rows import Rows, Then, row_of
from tidings.messaging.templates import prepare
from tidings.store.tables_messaging import templates

__all__ = ["TemplateRows"]


class TemplateRows(Rows):
    def campaign(
        self, project_id: int, campaign_id: int, conn: Connection | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError  # CampaignStore's

    def _check_endpoint(self, channel: str, data: Mapping[str, Any]) -> None:
        """A webhook template's endpoint may not name a private, loopback or link-local
        address (422), unless the operator allows them. What Liquid fills in is checked
        when the request is made."""
        if channel != "webhook" or self.allow_private_webhooks:
            return
        endpoint = data.get("endpoint")
        if not isinstance(endpoint, str):
            return
        written = endpoint.split("{{", 1)[0].split("{%", 1)[0]
        if written != endpoint and written.count("/") < 3:
            return  # the host is (partly) Liquid: checked at send time
        why = blocked_url_reason(written)
        if why is not None:
            message = f"The endpoint is refused: {why}. {ALLOW_SETTING}=1 allows it."
            raise ValidationFailed(
                message,
                param="data.endpoint",
                errors=[FieldError("data.endpoint", "validation_failed", message)],
            )

    # -- templates ---------------------------------------------------------------------------

    def templates(
        self, project_id: int, limit: int, cursor: str | None, campaign_id: int | None = None
    ) -> Page:
        query = sa.select(templates).where(templates.c.project_id == project_id)
        if campaign_id is not None:
            query = query.where(templates.c.campaign_id == campaign_id)
        with self.reader.connect() as conn:
            return id_page(conn, query, templates.c.id, limit, cursor)

    def template(self, project_id: int, template_id: int) -> dict[str, Any]:
        return self._one(templates, project_id, template_id, "template")

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
        self._check_endpoint(campaign["channel"], data)
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
                    then(conn, row_of(conn, templates, new_id))
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
            self._check_endpoint(current["type"], data)
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
