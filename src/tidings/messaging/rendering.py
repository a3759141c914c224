"""Rendering a round's sends: the users, projects and templates they need, read in a few
statements, and each message rendered (Liquid) and, for email, decorated by the tracker.
Parsed templates are kept per worker until their row changes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.channels import DeliveryResult, EmailMessage, Outcome
from tidings.domain.messaging import locale_candidates
from tidings.domain.tracking import Tracker, TrackingRef
from tidings.messaging.claims import Claimed
from tidings.messaging.recipients import push_tokens, template_users
from tidings.messaging.templates import CompiledTemplate, RenderError, compile_template
from tidings.store.tables import projects
from tidings.store.tables_messaging import templates

__all__ = ["Renderer", "project_root"]


def project_root(project: Any) -> dict[str, Any]:
    """The ``project`` root of a template (a projects row)."""
    return {
        "id": project.id,
        "name": project.name,
        "locale": project.locale,
        "timezone": project.timezone,
    }


class Renderer:
    def __init__(self, reader: Engine, tracker: Tracker | None) -> None:
        self.reader = reader
        self.tracker = tracker
        self._templates: dict[int, tuple[int, CompiledTemplate | RenderError]] = {}

    def render(self, items: list[Claimed], conn: Connection | None = None) -> None:
        """Each item's ``message`` (or, when it cannot be made, a permanent ``result``)."""
        if conn is None:
            with self.reader.connect() as own:
                self.render(items, own)
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
                "project": project_root(project),
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
