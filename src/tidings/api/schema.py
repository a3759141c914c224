"""The data schema: every trait and event-property path seen, with its type."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.presenters import iso
from tidings.bootstrap import Services
from tidings.domain.auth import Role

__all__ = ["schema_router"]

_encode = msgspec.json.Encoder().encode


class SchemaPath(BaseModel):
    source: Literal["trait", "event"]
    event_name: str | None
    path: str
    type: Literal["string", "number", "boolean", "date", "array", "object"]
    first_seen_at: str
    last_seen_at: str


class SchemaList(BaseModel):
    results: list[SchemaPath]


def schema_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(prefix="/api/client", tags=["schema"])

    @router.get(
        "/schema",
        response_model=SchemaList,
        summary="Trait and event-property paths seen, with their types",
    )
    async def get_schema(
        request: Request,
        source: Annotated[Literal["trait", "event"] | None, Query()] = None,
        event_name: Annotated[str | None, Query(max_length=255)] = None,
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        rows = await run_in_threadpool(
            lambda: services.schema.list(auth.project.id, source=source, event_name=event_name)
        )
        for row in rows:
            row["first_seen_at"] = iso(row["first_seen_at"])
            row["last_seen_at"] = iso(row["last_seen_at"])
        return Response(_encode({"results": rows}), media_type="application/json")

    return router
