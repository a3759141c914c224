"""The lists API (secret key): static and dynamic lists, their members, CSV import.

Reads need any secret key, writes the editor role. Bodies are read and checked in
``lists_wire``. ``Idempotency-Key`` answers are stored in the same transaction as the
change they answer.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings.api import lists_wire
from tidings.api.auth import AuthContext, KeyCache
from tidings.api.idempotency import Idempotent, idempotent_route, in_transaction
from tidings.api.presenters import iso, present_profile
from tidings.api.users import UserPage
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
)
from tidings.domain.ingest import partition_of
from tidings.domain.membership import IdKind, MemberRow
from tidings.store.lists import UNSET, ListRow, ListStore

__all__ = ["lists_router"]

_encode = msgspec.json.Encoder().encode
_LIST_ID = re.compile(r"^[0-9]{1,18}$")


def _now() -> int:
    return time.time_ns() // 1000


# -- response models (the OpenAPI document) ---------------------------------------------------


class Progress(BaseModel):
    done: int = Field(description="Users the back-fill has computed so far.")
    total: int | None = Field(
        description="The project's users when the back-fill started; null until it has."
    )


class ListOut(BaseModel):
    id: int
    name: str
    type: Literal["static", "dynamic"]
    state: Literal["draft", "loading", "ready"] = Field(
        description="Static lists are always ready; a dynamic list is loading while its "
        "rule is back-filled."
    )
    version: int = Field(description="Starts at 1; each change of the rule adds one.")
    users_count: int
    rule: dict[str, Any] | None
    tags: list[str]
    created_at: str
    updated_at: str = Field(description="When the name, tags or rule last changed.")
    progress: Progress | None = Field(
        default=None,
        description="Only while a dynamic list is loading: how far the back-fill of its "
        "rule has got.",
    )


class ListPageOut(BaseModel):
    results: list[ListOut]
    nextCursor: str | None = Field(description="Older lists; null on the last page.")
    prevCursor: str | None = Field(description="Newer lists; null on the first page.")
    limit: int


class InvalidRow(BaseModel):
    row: int
    code: str
    message: str


class MembersAdded(BaseModel):
    added: int
    already_member: int
    not_found: int
    invalid: int
    not_found_rows: list[int] = Field(
        description="CSV row numbers (the header is row 1), or JSON array indexes; first 100."
    )
    invalid_rows: list[InvalidRow] = Field(description="CSV rows that were skipped; first 100.")


class MembersRemoved(BaseModel):
    removed: int
    not_member: int
    not_found: int
    invalid: int
    not_found_rows: list[int]
    invalid_rows: list[InvalidRow]


# -- answers ---------------------------------------------------------------------------------------


def present_list(row: ListRow) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "state": row.state,
        "version": row.version,
        "users_count": row.users_count,
        "rule": row.rule,
        "tags": row.tags,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    progress = row.progress
    if progress is not None:
        body["progress"] = {"done": progress[0], "total": progress[1]}
    return body


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json")


def _list_id(raw: str) -> int:
    # Ids are 32-bit integers (the column): a larger number names no list either.
    if not _LIST_ID.match(raw) or int(raw) > 2**31 - 1:
        raise NotFound(f"No list with id '{raw[:40]}'.", param="id")
    return int(raw)


def lists_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client", route_class=idempotent_route(services, keys), tags=["lists"]
    )
    store = ListStore(services.db.writer, services.db.reader)

    async def _writer(request: Request) -> AuthContext:
        return await keys.authenticate(request, secret=True, role=Role.EDITOR)

    async def _reader(request: Request) -> AuthContext:
        return await keys.authenticate(request, secret=True, role=Role.SUPPORT)

    async def _found(project_id: int, list_id: int) -> ListRow:
        row = await run_in_threadpool(store.get, project_id, list_id)
        if row is None:
            raise NotFound(f"No list with id {list_id}.", param="id")
        return row

    @router.get("/lists", response_model=ListPageOut, summary="Lists, newest first")
    async def get_lists(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        auth = await _reader(request)
        page = await run_in_threadpool(
            lambda: store.page(auth.project.id, limit=limit, cursor=cursor)
        )
        return _json(
            {
                "results": [present_list(r) for r in page.results],
                "nextCursor": page.next_cursor,
                "prevCursor": page.prev_cursor,
                "limit": page.limit,
            }
        )

    @router.post(
        "/lists",
        status_code=201,
        response_model=ListOut,
        summary="Create a static or dynamic list (editor)",
        responses=lists_wire.WRITE,
        openapi_extra=lists_wire.openapi_body(
            {**lists_wire.LIST_BODY, "required": ["name", "type"]}
        ),
    )
    @in_transaction
    async def create_list(request: Request) -> Response:
        auth = await _writer(request)
        raw, _ = await lists_wire.read_body(request)
        once = Idempotent(services, request, auth.project.id, raw)
        if (replay := await once.replay()) is not None:
            return replay
        given = lists_wire.list_fields(lists_wire.json_object(raw, refuse_nul=True))
        result = await once.run(
            lambda: store.create(
                auth.project.id,
                name=given["name"],
                type=given["type"],
                rule=given.get("rule"),
                tags=given.get("tags", []),
                now=_now(),
                then=once.hook(201, present_list),
            )
        )
        return result if isinstance(result, Response) else _json(present_list(result), 201)

    @router.get(
        "/lists/{id}",
        response_model=ListOut,
        summary="A list",
        responses=lists_wire.ONE,
    )
    async def get_list(request: Request, id: str) -> Response:
        auth = await _reader(request)
        return _json(present_list(await _found(auth.project.id, _list_id(id))))

    @router.patch(
        "/lists/{id}",
        response_model=ListOut,
        summary="Rename, retag, or change a dynamic list's rule (editor)",
        responses={**lists_wire.WRITE, **lists_wire.ONE},
        openapi_extra=lists_wire.openapi_body(lists_wire.LIST_BODY),
    )
    @in_transaction
    async def update_list(request: Request, id: str) -> Response:
        auth = await _writer(request)
        list_id = _list_id(id)
        raw, _ = await lists_wire.read_body(request)
        once = Idempotent(services, request, auth.project.id, raw)
        if (replay := await once.replay()) is not None:
            return replay
        body = lists_wire.json_object(raw, refuse_nul=True)
        current = await _found(auth.project.id, list_id)
        given = lists_wire.list_fields(body, current_type=current.type)
        result = await once.run(
            lambda: store.update(
                auth.project.id,
                list_id,
                now=_now(),
                name=given.get("name", UNSET),
                rule=given.get("rule", UNSET),
                tags=given.get("tags", UNSET),
                then=once.hook(200, present_list),
            )
        )
        return result if isinstance(result, Response) else _json(present_list(result))

    @router.delete(
        "/lists/{id}",
        status_code=204,
        response_class=Response,
        summary="Delete a list (editor)",
        responses={
            **lists_wire.READ,
            **lists_wire.ONE,
            403: lists_wire.problem("The key's role is below editor"),
        },
    )
    async def delete_list(request: Request, id: str) -> Response:
        auth = await _writer(request)
        list_id = _list_id(id)
        if not await run_in_threadpool(lambda: store.delete(auth.project.id, list_id, now=_now())):
            raise NotFound(f"No list with id {list_id}.", param="id")
        return Response(status_code=204)

    @router.get(
        "/lists/{id}/users",
        response_model=UserPage,
        summary="A list's members, most recently added first",
        responses={**lists_wire.READ, **lists_wire.ONE},
    )
    async def get_members(
        request: Request,
        id: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        auth = await _reader(request)
        list_id = _list_id(id)
        page = await run_in_threadpool(
            lambda: store.members(auth.project.id, list_id, limit=limit, cursor=cursor)
        )
        return _json(
            {
                "results": [present_profile(p) for p in page.results],
                "nextCursor": page.next_cursor,
                "prevCursor": page.prev_cursor,
                "limit": page.limit,
            }
        )

    async def _caught_up(project_id: int, kind: IdKind, rows: list[MemberRow]) -> None:
        """Wait until the writes already accepted for these users are applied, so that a
        user created a moment ago is found. Emails do not route: every partition then."""
        count = services.log.partitions
        if kind == "email":
            partitions = set(range(count))
        else:
            partitions = {partition_of(project_id, r.value, count) for r in rows if r.value}
        if not await services.wait_accepted(partitions, services.settings.sync_timeout):
            raise ServiceUnavailable(
                "Earlier writes for these users are not processed yet; retry shortly.",
                retry_after=2,
            )

    async def _change_members(request: Request, id: str, *, add: bool) -> Response:
        auth = await _writer(request)
        project_id, list_id = auth.project.id, _list_id(id)
        raw, is_csv = await lists_wire.read_body(request, csv=True)
        once = Idempotent(services, request, project_id, raw)
        if add and (replay := await once.replay()) is not None:
            return replay
        # A 1 MB CSV of emails is ~1 s of checking: not on the event loop.
        kind, rows = await run_in_threadpool(lists_wire.member_rows, raw, is_csv)
        if (await _found(project_id, list_id)).type != "static":
            raise Conflict(f"List {list_id} is dynamic: its members follow its rule.", param="id")
        await _caught_up(project_id, kind, rows)
        change = store.add_members if add else store.remove_members
        result = await once.run(
            lambda: change(
                project_id,
                list_id,
                kind,
                rows,
                now=_now(),
                then=once.hook(200, lambda t: t.summary(added=add)) if add else None,
            )
        )
        if isinstance(result, Response):
            return result
        return _json(result.summary(added=add))

    @router.post(
        "/lists/{id}/users",
        response_model=MembersAdded,
        summary="Add users to a static list, by JSON or CSV (editor)",
        responses=lists_wire.MEMBERS,
        openapi_extra=lists_wire.openapi_body(lists_wire.MEMBERS_BODY, csv=True),
    )
    @in_transaction
    async def add_members(request: Request, id: str) -> Response:
        return await _change_members(request, id, add=True)

    @router.delete(
        "/lists/{id}/users",
        response_model=MembersRemoved,
        summary="Remove users from a static list, by JSON or CSV (editor)",
        responses=lists_wire.MEMBERS,
        openapi_extra=lists_wire.openapi_body(lists_wire.MEMBERS_BODY, csv=True, idempotent=False),
    )
    async def remove_members(request: Request, id: str) -> Response:
        return await _change_members(request, id, add=False)

    return router
