"""The providers API (secret key, admin role): ``GET|POST /providers``,
``GET|PATCH|DELETE /providers/{id}``. Secrets in ``data`` are write-only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.idempotency import Idempotent, idempotent_route, in_transaction
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
from tidings.domain.auth import Role
from tidings.domain.errors import ValidationFailed
from tidings.domain.messaging import PROVIDER_GROUPS, RATE_INTERVALS
from tidings.messaging.provider_rows import present_provider_data
from tidings.messaging.providers import PROVIDER_TYPES, build_adapter, channel_of

__all__ = ["present_provider", "providers_router"]

_FIELDS = frozenset({"type", "name", "group", "is_default", "rate_limit", "rate_interval", "data"})


def present_provider(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "name": row["name"],
        "group": row["channel"],
        "is_default": row["is_default"],
        "rate_limit": row["rate_limit"],
        "rate_interval": row["rate_interval"],
        "data": present_provider_data(row["data"]),
        "created_at": present_time(row["created_at"]),
        "updated_at": present_time(row["updated_at"]),
    }


async def _check_adapter(provider_type: str, data: dict[str, Any]) -> None:
    """Build the adapter once, so that bad ``data`` is refused now, not at send time."""
    try:
        adapter = build_adapter(provider_type, data)
    except ModuleNotFoundError:
        raise ValidationFailed(
            f"Provider type '{provider_type}' is not available in this build.", param="type"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationFailed(f"The provider's data is not valid: {exc}", param="data") from None
    await adapter.aclose()


def providers_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client",
        route_class=idempotent_route(services, keys),
        tags=["providers"],
        responses=ERRORS,
    )
    assert services.messaging is not None
    store = services.messaging.campaigns

    async def _admin(request: Request) -> int:
        return (await keys.authenticate(request, secret=True, role=Role.ADMIN)).project.id

    def _fields(value: Any, *, creating: bool, current: dict[str, Any] | None) -> dict[str, Any]:
        body = Body(value, _FIELDS)
        out: dict[str, Any] = {}
        kind = body.string("type", required=creating, choices=tuple(PROVIDER_TYPES))
        name = body.string("name", required=creating)
        group = body.string("group", required=creating, choices=PROVIDER_GROUPS)
        is_default = body.boolean("is_default")
        rate_limit = body.integer("rate_limit", maximum=10_000_000)
        interval = body.string("rate_interval", choices=tuple(RATE_INTERVALS))
        data = body.obj("data")
        body.done()
        final_type = kind or (current or {}).get("type")
        final_group = group or (current or {}).get("channel")
        if final_type is not None and final_group is not None:
            serves = channel_of(final_type)
            if serves is not None and serves != final_group:
                raise ValidationFailed(
                    f"A {final_type} provider sends {serves}, not {final_group}.", param="group"
                )
        for key, val in (
            ("type", kind),
            ("name", name),
            ("channel", group),
            ("is_default", is_default),
            ("rate_limit", rate_limit),
            ("rate_interval", interval),
            ("data", data),
        ):
            if val is not None:
                out[key] = val
        if creating:
            out.setdefault("is_default", False)
            out.setdefault("rate_limit", 0)
            out.setdefault("rate_interval", "second")
            out.setdefault("data", {})
        return out

    @router.get("/providers", summary="Providers (admin)")
    async def list_providers(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        project_id = await _admin(request)
        page = await run_in_threadpool(store.providers, project_id, limit, cursor)
        return page_answer(page, present_provider)

    @router.post("/providers", status_code=201, summary="Add a provider (admin)")
    @in_transaction
    async def create_provider(request: Request) -> Response:
        project_id = await _admin(request)
        raw, value = await json_body(request)
        once = Idempotent(services, request, project_id, raw)
        if (replay := await once.replay()) is not None:
            return replay
        values = _fields(value, creating=True, current=None)
        await _check_adapter(values["type"], values["data"])
        row = await once.run(
            lambda: store.create_provider(project_id, values, then=once.hook(201, present_provider))
        )
        return row if isinstance(row, Response) else json_response(present_provider(row), 201)

    @router.get("/providers/{id}", summary="A provider (admin)")
    async def get_provider(request: Request, id: str) -> Response:
        project_id = await _admin(request)
        row = await run_in_threadpool(store.provider, project_id, resource_id(id, "provider"))
        return json_response(present_provider(row))

    @router.patch("/providers/{id}", summary="Change a provider (admin); '********' keeps a secret")
    async def update_provider(request: Request, id: str) -> Response:
        project_id = await _admin(request)
        provider_id = resource_id(id, "provider")
        current = await run_in_threadpool(store.provider, project_id, provider_id)
        _, value = await json_body(request)
        values = _fields(value, creating=False, current=current)
        if "data" in values or "type" in values:
            from tidings.messaging.provider_rows import merge_provider_data

            data = merge_provider_data(current["data"], values.get("data", current["data"]))
            await _check_adapter(values.get("type", current["type"]), data)
        row = await run_in_threadpool(store.update_provider, project_id, provider_id, values)
        return json_response(present_provider(row))

    @router.delete("/providers/{id}", status_code=204, summary="Remove a provider (admin)")
    async def delete_provider(request: Request, id: str) -> Response:
        project_id = await _admin(request)
        await run_in_threadpool(store.delete_provider, project_id, resource_id(id, "provider"))
        return Response(status_code=204)

    document_bodies(router)
    return router
