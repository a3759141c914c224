"""The users API (secret key): list and search profiles, read one and its timeline, erase.

Erasure goes through the ingest log like every write, so it is applied after everything
already accepted for the user, then waits for the worker like ``POST /users/batch``.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.presenters import present_event, present_profile
from tidings.bootstrap import Services
from tidings.domain import fields
from tidings.domain.auth import Role
from tidings.domain.errors import InvalidRequest, NotFound, ServiceUnavailable
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.store.users import UserQueries

__all__ = ["users_router"]

_encode = msgspec.json.Encoder().encode
MAX_IDS = 100
MAX_NAMES = 100
MAX_QUERY = 255
# "…T10:00:00+10:00" unencoded in a URL arrives as "…T10:00:00 10:00": read the space as "+".
_SPACED_OFFSET = re.compile(r"(T[0-9:.]+) ([0-9]{2}(:?[0-9]{2})?)$")


def _json(body: Any) -> Response:
    return Response(_encode(body), media_type="application/json")


class Device(BaseModel):
    device_id: str
    token: str | None = None
    os: str | None = None
    os_version: str | None = None
    model: str | None = None
    app_build: str | None = None
    app_version: str | None = None
    sdk_version: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class MergeRejection(BaseModel):
    anonymous_id: str
    external_id: str
    reason: str
    created_at: str | None = None


class User(BaseModel):
    id: str
    project_id: int = Field(description="The project the user belongs to.")
    external_id: str | None = None
    anonymous_id: str | None = Field(default=None, description="The first anonymous id linked.")
    anonymous_ids: list[str] = []
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: dict[str, Any] = {}
    created_at: str | None = None
    updated_at: str | None = None
    devices: list[Device] = []
    has_push_device: bool = Field(
        default=False, description="Whether one of the user's devices has a push token."
    )
    merge_rejections: list[MergeRejection] = Field(
        default=[], description="Merges refused because two identified users were involved."
    )


class Event(BaseModel):
    id: str
    name: str
    created_at: str | None
    external_id: str | None = None
    anonymous_id: str | None = None
    data: dict[str, Any] | None = None


class EventPage(BaseModel):
    results: list[Event]
    nextCursor: str | None
    prevCursor: str | None = None
    limit: int


class UserPage(BaseModel):
    results: list[User]
    nextCursor: str | None = Field(description="Older profiles; null on the last page.")
    prevCursor: str | None = Field(description="Newer profiles; null on the first page.")
    limit: int


class Erased(BaseModel):
    external_id: str
    deleted: bool = Field(description="False: no user with this external_id.")


class EraseResult(BaseModel):
    results: list[Erased]
    deleted: int


def _now() -> int:
    return time.time_ns() // 1000


def _timestamp(value: str | None, param: str) -> int | None:
    if value is None:
        return None
    text = _SPACED_OFFSET.sub(r"\1+\2", value.strip())
    try:
        return fields.parse_timestamp(text)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{param}: {exc}", param=param) from None


def _names(*groups: list[str] | None) -> list[str]:
    names = [name for group in groups for name in (group or [])]
    for name in names:
        if not name.strip():
            raise InvalidRequest(
                "name: an event name is empty.", code="parameter_invalid_empty", param="name"
            )
        if len(name) > 255:
            raise InvalidRequest("name: an event name is longer than 255 characters.", param="name")
    if len(names) > MAX_NAMES:
        raise InvalidRequest(f"name: at most {MAX_NAMES} event names.", param="name")
    return names


def users_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(prefix="/api/client", tags=["users"])
    queries = UserQueries(services.db.reader)

    async def _caught_up(external_ids: list[str], project_id: int) -> list[int]:
        """Wait until every entry already accepted for these users is applied; their
        partitions. Then a profile that is missing is really missing."""
        partitions = [
            partition_of(project_id, external_id, services.log.partitions)
            for external_id in external_ids
        ]
        if not await services.wait_accepted(partitions, services.settings.sync_timeout):
            raise ServiceUnavailable(
                "Earlier writes for these users are not processed yet; retry shortly.",
                retry_after=2,
            )
        return partitions

    async def _erase(project_id: int, external_ids: list[str], partitions: list[int]) -> None:
        now = _now()
        entries = [
            LogEntry(
                project_id=project_id,
                kind="erase",
                partition=partition,
                payload={"external_id": external_id},
                accepted_at=now,
            )
            for external_id, partition in zip(external_ids, partitions, strict=True)
        ]
        outcome = await services.committer.append(AppendRequest(entries, want_positions=True))
        if not await services.wait_processed(outcome.positions, services.settings.sync_timeout):
            raise ServiceUnavailable(
                "The erasure was accepted and will be applied, but is not finished yet.",
                retry_after=2,
            )

    @router.get("/users", response_model=UserPage, summary="Users, newest first; search with q")
    async def list_users(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        q: Annotated[
            str | None,
            Query(
                max_length=MAX_QUERY,
                description="Prefix of an external_id, an anonymous id, an email (any case) "
                "or an E.164 phone.",
            ),
        ] = None,
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        search = q.strip() if q else None
        page = await run_in_threadpool(
            lambda: queries.list_profiles(
                auth.project.id, limit=limit, cursor=cursor, q=search or None
            )
        )
        return _json(
            {
                "results": [present_profile(p) for p in page.results],
                "nextCursor": page.next_cursor,
                "prevCursor": page.prev_cursor,
                "limit": page.limit,
            }
        )

    @router.delete(
        "/users",
        response_model=EraseResult,
        summary="Erase several users (admin)",
    )
    async def erase_users(
        request: Request,
        user_id: Annotated[
            list[str] | None, Query(description="1 to 100 external ids; repeat the parameter.")
        ] = None,
    ) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.ADMIN)
        project_id = auth.project.id
        ids = user_id or []
        if not ids:
            raise InvalidRequest(
                "user_id: name 1 to 100 users, as user_id=a&user_id=b.",
                code="parameter_missing",
                param="user_id",
            )
        if len(ids) > MAX_IDS:
            raise InvalidRequest(
                f"user_id: at most {MAX_IDS} users; got {len(ids)}.", param="user_id"
            )
        for value in ids:
            if not value.strip():
                raise InvalidRequest(
                    "user_id: an id is empty.", code="parameter_invalid_empty", param="user_id"
                )
            if len(value) > 255:
                raise InvalidRequest(
                    "user_id: an id is longer than 255 characters.", param="user_id"
                )
        distinct = list(dict.fromkeys(ids))
        partitions = await _caught_up(distinct, project_id)
        known = await run_in_threadpool(queries.known_external_ids, project_id, distinct)
        doomed = [(x, p) for x, p in zip(distinct, partitions, strict=True) if x in known]
        if doomed:
            await _erase(project_id, [x for x, _ in doomed], [p for _, p in doomed])
        return _json(
            {
                "results": [{"external_id": x, "deleted": x in known} for x in ids],
                "deleted": len(doomed),
            }
        )

    async def _profile_id(request: Request, external_id: str) -> tuple[int, str]:
        auth = await keys.authenticate(request, secret=True, role=Role.SUPPORT)
        project_id = auth.project.id
        profile_id = await run_in_threadpool(
            services.profiles.profile_id_for, project_id, "external", external_id
        )
        if profile_id is None:
            raise NotFound(f"No user with external_id '{external_id}'.", param="external_id")
        return project_id, profile_id

    @router.get("/users/{external_id}", response_model=User, summary="A user's profile")
    async def get_user(request: Request, external_id: str) -> Response:
        project_id, profile_id = await _profile_id(request, external_id)
        profile = await run_in_threadpool(services.profiles.get_profile, project_id, profile_id)
        if profile is None:
            raise NotFound(f"No user with external_id '{external_id}'.", param="external_id")
        return _json(present_profile(profile))

    @router.delete(
        "/users/{external_id}",
        status_code=204,
        response_class=Response,
        summary="Erase a user (admin)",
    )
    async def erase_user(request: Request, external_id: str) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.ADMIN)
        project_id = auth.project.id
        partitions = await _caught_up([external_id], project_id)
        known = await run_in_threadpool(queries.known_external_ids, project_id, [external_id])
        if not known:
            raise NotFound(f"No user with external_id '{external_id}'.", param="external_id")
        await _erase(project_id, [external_id], partitions)
        return Response(status_code=204)

    @router.get(
        "/users/{external_id}/events",
        response_model=EventPage,
        summary="A user's events, newest first",
    )
    async def get_user_events(
        request: Request,
        external_id: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        include_payload: bool = True,
        name: Annotated[
            list[str] | None, Query(description="Events with any of these names.")
        ] = None,
        event_name: Annotated[list[str] | None, Query(description="Same as name.")] = None,
        event_name_list: Annotated[
            list[str] | None,
            Query(alias="event_name[]", description="Same as name."),
        ] = None,
        since: Annotated[
            str | None,
            Query(alias="from", max_length=64, description="ISO-8601; created_at at or after."),
        ] = None,
        until: Annotated[
            str | None,
            Query(alias="to", max_length=64, description="ISO-8601; created_at before."),
        ] = None,
    ) -> Response:
        project_id, profile_id = await _profile_id(request, external_id)
        names = _names(name, event_name, event_name_list)
        start, end = _timestamp(since, "from"), _timestamp(until, "to")
        page = await run_in_threadpool(
            lambda: queries.list_events(
                project_id,
                profile_id,
                limit=limit,
                cursor=cursor,
                include_payload=include_payload,
                names=names,
                since=start,
                until=end,
            )
        )
        return _json(
            {
                "results": [present_event(e) for e in page.results],
                "nextCursor": page.next_cursor,
                "prevCursor": None,
                "limit": page.limit,
            }
        )

    return router
