"""The templates API (secret key): ``GET|POST /templates``, ``GET|PATCH|DELETE
/templates/{id}``, ``POST /templates/{id}/preview`` and ``POST /templates/{id}/proof``.

One template per (campaign, locale); its ``type`` is the campaign's channel. A template
that does not parse is refused (422, with the line and column).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.idempotency import Idempotent, idempotent_route, in_transaction, not_idempotent
from tidings.api.messaging_wire import (
    ERRORS,
    Body,
    document_bodies,
    json_body,
    json_response,
    page_answer,
    present_time,
    resource_id,
)
from tidings.bootstrap import Services
from tidings.domain import fields, limits
from tidings.domain.auth import Role
from tidings.domain.channels import Message, Outcome
from tidings.domain.errors import Conflict, ValidationFailed
from tidings.messaging.campaigns import CampaignStore
from tidings.messaging.rendering import project_root
from tidings.messaging.templates import RenderError, compile_template

__all__ = ["present_template", "templates_router"]

_FIELDS = frozenset({"campaign_id", "type", "locale", "data"})
_PREVIEW = frozenset({"user", "event", "context", "journey"})
_PROOF = frozenset({"recipient", "user", "event", "context"})


def present_template(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "campaign_id": row["campaign_id"],
        "type": row["type"],
        "locale": row["locale"],
        "data": row["data"],
        "created_at": present_time(row["created_at"]),
        "updated_at": present_time(row["updated_at"]),
    }


def _message(message: Message) -> dict[str, Any]:
    out = dataclasses.asdict(message)
    for key, value in list(out.items()):
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


def _locale(body: Body, *, required: bool) -> str | None:
    raw = body.string("locale", required=required, max_length=255)
    if raw is None:
        return None
    try:
        return fields.normalise_locale(raw)
    except ValueError as exc:
        body.problems.invalid("locale", str(exc))
        return None


def templates_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client",
        route_class=idempotent_route(services, keys),
        tags=["templates"],
        responses=ERRORS,
    )
    assert services.messaging is not None
    store = services.messaging.campaigns
    adapter_for = services.messaging.delivery.adapter_factory

    async def _auth(request: Request, role: Role) -> int:
        return (await keys.authenticate(request, secret=True, role=role)).project.id

    def _roots(project_id: int, row: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        project = services.projects.get_project(project_id)
        user = dict(given.get("user") or {})
        data: dict[str, Any] = user["data"] if isinstance(user.get("data"), dict) else {}
        return {
            "user": {**data, **user, "data": data, "id": user.get("external_id")},
            "event": given.get("event") or {},
            "journey": given.get("journey") or {},
            "project": project_root(project),
            "context": {
                **(given.get("context") or {}),
                "campaign_id": row["campaign_id"],
                "template_id": row["id"],
            },
        }

    def _render(
        project_id: int, row: dict[str, Any], given: dict[str, Any], recipient: dict[str, Any]
    ) -> Message:
        try:
            compiled = compile_template(row["type"], row["data"], row.get("compiled"))
            return compiled.render(_roots(project_id, row, given), recipient=recipient)
        except RenderError as exc:
            raise ValidationFailed(f"The template could not be rendered: {exc.reason}") from None

    @router.get("/templates", summary="Templates, newest first")
    async def list_templates(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        campaign_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        page = await run_in_threadpool(store.templates, project_id, limit, cursor, campaign_id)
        return page_answer(page, present_template)

    @router.post("/templates", status_code=201, summary="Add a campaign's template (editor)")
    @in_transaction
    async def create_template(request: Request) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        raw, value = await json_body(request)
        once = Idempotent(services, request, project_id, raw)
        if (replay := await once.replay()) is not None:
            return replay
        body = Body(value, _FIELDS)
        campaign_id = body.integer("campaign_id", required=True, minimum=1)
        kind = body.string("type")
        locale = _locale(body, required=True)
        data = body.obj("data", required=True)
        body.done()
        assert campaign_id is not None and locale is not None and data is not None
        campaign = await run_in_threadpool(store.campaign, project_id, campaign_id)
        if kind is not None and kind != campaign["channel"]:
            raise ValidationFailed(
                f"The campaign sends {campaign['channel']}: its templates are of that type.",
                param="type",
            )
        hook = once.hook(201, present_template)
        try:
            row = await run_in_threadpool(
                lambda: store.create_template(project_id, campaign_id, locale, data, then=hook)
            )
        except Conflict:
            # With a key: a concurrent twin stored the answer first; replay it.
            if once.key is not None and (replay := await once.replay()) is not None:
                return replay
            raise
        return json_response(present_template(row), 201)

    @router.get("/templates/{id}", summary="A template")
    async def get_template(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        row = await run_in_threadpool(store.template, project_id, resource_id(id, "template"))
        return json_response(present_template(row))

    @router.patch("/templates/{id}", summary="Change a template (editor)")
    async def update_template(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        template_id = resource_id(id, "template")
        current = await run_in_threadpool(store.template, project_id, template_id)
        _, value = await json_body(request)
        body = Body(value, _FIELDS)
        if body.has("campaign_id") and value.get("campaign_id") != current["campaign_id"]:
            body.problems.add("campaign_id", "parameter_invalid_format", "Cannot change.")
        kind = body.string("type")
        if kind is not None and kind != current["type"]:
            body.problems.invalid("type", f"The template's type is {current['type']}.")
        locale = _locale(body, required=False)
        data = body.obj("data")
        body.done()
        row = await run_in_threadpool(
            lambda: store.update_template(project_id, template_id, locale=locale, data=data)
        )
        return json_response(present_template(row))

    @router.delete("/templates/{id}", status_code=204, summary="Delete a template (editor)")
    async def delete_template(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        await run_in_threadpool(store.delete_template, project_id, resource_id(id, "template"))
        return Response(status_code=204)

    @router.post("/templates/{id}/preview", summary="The rendered message, sending nothing")
    @not_idempotent("read-only: renders the template, changes nothing")
    async def preview(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        row = await run_in_threadpool(store.template, project_id, resource_id(id, "template"))
        _, value = await json_body(request)
        body = Body(value, _PREVIEW)
        for name in _PREVIEW:  # 'user' and 'event' may hold a 'data' of 32 levels
            body.obj(name, max_depth=limits.MAX_DEPTH + 1)
        body.done()
        user = value.get("user") or {}
        recipient = {
            "email": user.get("email") or "preview@example.invalid",
            "phone": user.get("phone") or "+10000000000",
            "push_token": "preview",
            "push_os": "ios",
        }
        message = await run_in_threadpool(_render, project_id, row, value, recipient)
        return json_response({"type": row["type"], "message": _message(message)})

    @router.post(
        "/templates/{id}/proof", summary="Send the rendered message to a recipient (editor)"
    )
    async def proof(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        row = await run_in_threadpool(store.template, project_id, resource_id(id, "template"))
        _, value = await json_body(request)
        body = Body(value, _PROOF)
        recipient_raw = body.string("recipient", required=True, max_length=4096)
        for name in ("user", "event", "context"):
            body.obj(name, max_depth=limits.MAX_DEPTH + 1)
        body.done()
        assert recipient_raw is not None
        recipient: dict[str, Any] = {}
        if row["type"] == "email":
            try:
                recipient["email"] = fields.normalise_email(recipient_raw)
            except ValueError as exc:
                raise ValidationFailed(str(exc), param="recipient") from None
        elif row["type"] == "text":
            try:
                recipient["phone"] = fields.normalise_phone(recipient_raw)
            except ValueError as exc:
                raise ValidationFailed(str(exc), param="recipient") from None
        elif row["type"] == "push":
            recipient.update(push_token=recipient_raw, push_os="")
        else:
            raise Conflict(f"A {row['type']} template has no proof recipient.")
        campaign = await run_in_threadpool(store.campaign, project_id, row["campaign_id"])

        def provider() -> dict[str, Any] | None:
            with services.db.reader.connect() as conn:
                return CampaignStore.provider_for(
                    conn, project_id, campaign["channel"], campaign["provider_id"]
                )

        chosen = await run_in_threadpool(provider)
        if chosen is None:
            raise Conflict(f"No {campaign['channel']} provider is set up for this campaign.")
        message = await run_in_threadpool(_render, project_id, row, value, recipient)
        # The worker's factory: the same rules (TIDINGS_WEBHOOK_ALLOW_PRIVATE) for a proof.
        adapter = adapter_for(chosen["type"], chosen["data"])
        try:
            result = await adapter.send(message)
        finally:
            await adapter.aclose()
        answer: dict[str, Any] = {"success": result.outcome is Outcome.ACCEPTED}
        if result.provider_message_id:
            answer["provider_message_id"] = result.provider_message_id
        if result.outcome is not Outcome.ACCEPTED:
            answer["outcome"] = result.outcome.value
            answer["reason"] = result.reason
        return json_response(answer)

    document_bodies(router)
    return router
