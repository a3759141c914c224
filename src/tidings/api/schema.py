"""The data schema: every trait and event-property path seen, with its type, paged
(``limit`` up to 1000, ``cursor`` from the previous page's ``nextCursor``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.presenters import iso
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.store import cursors

__all__ = ["schema_router"]

_encode = msgspec.json.Encoder().encode
MAX_LIMIT = 1000  # paths per page


class SchemaPath(BaseModel):
    source: Literal["trait", "event"]
    event_name: str | None
    path: str
    type: Literal["string", "number", "boolean", "date", "array", "object"]
    first_seen_at: str
    last_seen_at: str


class SchemaList(BaseModel):
    results: list[SchemaPath]
    nextCursor: str | None = Field(description="The next page; null on the last page.")
    limit: int


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
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
        cursor: Annotated[str | None, Query(max_length=cursors.MAX_CURSOR_LENGTH)] = None,
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        rows, next_cursor = await run_in_threadpool(
            lambda: services.schema.list(
                auth.project.id, source=source, event_name=event_name, limit=limit, cursor=cursor
            )
        )
        for row in rows:
            row["first_seen_at"] = iso(row["first_seen_at"])
            row["last_seen_at"] = iso(row["last_seen_at"])
        body = {"results": rows, "nextCursor": next_cursor, "limit": limit}
        return Response(_encode(body), media_type="application/json")

    return router
