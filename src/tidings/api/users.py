"""Reads of profiles and their timelines (secret key)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.presenters import present_event, present_profile
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.errors import NotFound

__all__ = ["users_router"]

_encode = msgspec.json.Encoder().encode


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


class User(BaseModel):
    id: str
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


def users_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(prefix="/api/client", tags=["users"])

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
    ) -> Response:
        project_id, profile_id = await _profile_id(request, external_id)
        page = await run_in_threadpool(
            lambda: services.profiles.list_events(
                project_id,
                profile_id,
                limit=limit,
                cursor=cursor,
                include_payload=include_payload,
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
