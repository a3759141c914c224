"""In-app notifications as Spotzee's SDKs call them (public key).

- ``GET /api/client/notifications?cursor=&limit=`` with ``x-external-id`` and/or
  ``x-anonymous-id``: that user's unread, unexpired notifications, newest first.
- ``PUT /api/client/notifications/{id}`` ``{external_id?, anonymous_id?}`` (or the same
  headers): marks it read. Only its owner can: anyone else's, another project's or an
  unknown id is ``404``. A read notification is no longer listed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api import wire
from tidings.api.auth import KeyCache
from tidings.api.bodies import read_limited
from tidings.api.idempotency import idempotent_route, not_idempotent
from tidings.api.lists_wire import check_json
from tidings.api.presenters import iso
from tidings.bootstrap import Services
from tidings.domain.errors import InvalidRequest, NotFound
from tidings.store import cursors
from tidings.store.notifications import Notification, NotificationStore

__all__ = ["notifications_router", "present_notification"]

_encode = msgspec.json.Encoder().encode
_ID = re.compile(r"^[0-9]{1,18}$")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_ID_LENGTH = 255
MAX_BODY = 16 * 1024


def _now() -> int:
    return time.time_ns() // 1000


def present_notification(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "project_id": n.project_id,
        "user_id": n.profile_id,
        "content_type": n.content_type,
        "content": n.content,
        "read_at": iso(n.read_at),
        "expires_at": iso(n.expires_at),
        "created_at": iso(n.created_at),
        "updated_at": iso(n.updated_at),
    }


def _identity(value: Any, param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            f"{param} must be a string of at most {MAX_ID_LENGTH} characters.", param=param
        )
    return value


def notifications_router(
    services: Services,
    keys: KeyCache,
    store: NotificationStore,
    *,
    clock: Callable[[], int] = _now,
) -> APIRouter:
    router = APIRouter(
        prefix="/api/client", route_class=idempotent_route(services, keys), tags=["notifications"]
    )
    profiles = services.profiles

    def owners(project_id: int, external_id: str | None, anonymous_id: str | None) -> list[str]:
        found = []
        if external_id is not None:
            found.append(profiles.profile_id_for(project_id, "external", external_id))
        if anonymous_id is not None:
            found.append(profiles.profile_id_for(project_id, "anonymous", anonymous_id))
        return list(dict.fromkeys(p for p in found if p is not None))

    @router.get("/notifications", summary="A user's unread in-app notifications (public key)")
    async def list_notifications(
        request: Request, cursor: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> Response:
        auth = await keys.authenticate(request, secret=False)
        external_id = _identity(request.headers.get("x-external-id"), "x-external-id")
        anonymous_id = _identity(request.headers.get("x-anonymous-id"), "x-anonymous-id")
        if external_id is None and anonymous_id is None:
            raise InvalidRequest(
                "Name the user: send an x-external-id or x-anonymous-id header.",
                code="parameter_missing",
                param="x-external-id",
            )
        before: int | None = None
        if cursor is not None:  # a bad cursor: 400 parameter_invalid_format (store.cursors)
            (before,) = cursors.decode(cursor, tuple[int])
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}.", param="limit")
        project_id = auth.project.id
        found = await run_in_threadpool(owners, project_id, external_id, anonymous_id)
        rows: list[Notification] = []
        if found:  # the external id's profile when both are known
            rows = await run_in_threadpool(
                store.unread,
                project_id,
                found[0],
                clock(),
                before=before,
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        body = {
            "results": [present_notification(n) for n in rows],
            "nextCursor": cursors.encode(rows[-1].id) if more else None,
            "prevCursor": None,
            "limit": limit,
        }
        return Response(_encode(body), media_type="application/json")

    @router.put(
        "/notifications/{notification_id}",
        summary="Mark a notification read",
        openapi_extra={  # read by hand; optional (the user may be named by headers)
            "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}}
        },
    )
    @not_idempotent("public key: the user is named by a token or headers, not the body")
    async def mark_read(notification_id: str, request: Request) -> Response:
        auth = await keys.authenticate(request, secret=False)
        raw = await read_limited(request, MAX_BODY)
        body: Any = {}
        if raw.strip():
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise InvalidRequest(f"The body is not valid JSON: {exc}.", param="body") from None
            except RecursionError:  # the parser's own stack limit, far past ours
                raise wire.too_deep() from None
            check_json(raw, body)  # depth and NUL: 400 before anything is read
        if not isinstance(body, dict):
            raise InvalidRequest("Expected a JSON object.", param="body")
        external_id = _identity(
            body.get("external_id", request.headers.get("x-external-id")), "external_id"
        )
        anonymous_id = _identity(
            body.get("anonymous_id", request.headers.get("x-anonymous-id")), "anonymous_id"
        )
        if external_id is None and anonymous_id is None:
            raise InvalidRequest(
                "Name the user: external_id or anonymous_id.",
                code="parameter_missing",
                param="external_id",
            )
        missing = NotFound(f"No notification {notification_id[:40]} for this user.")
        if not _ID.match(notification_id):
            raise missing
        project_id = auth.project.id
        found = await run_in_threadpool(owners, project_id, external_id, anonymous_id)
        marked = await run_in_threadpool(
            store.mark_read, project_id, found, int(notification_id), clock()
        )
        if marked is None:
            raise missing
        return Response(_encode(present_notification(marked)), media_type="application/json")

    return router
