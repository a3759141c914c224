"""The campaigns API (secret key): ``GET|POST /campaigns``, ``GET|PATCH|DELETE
/campaigns/{id}``, ``POST /campaigns/{id}/duplicate``, ``POST /campaigns/{id}/trigger``,
``GET /campaigns/{id}/sends``.

Reads need any role, writes ``editor``, a state change that makes a campaign live
(``scheduled``, ``running``) or stops it (``aborting``) ``publisher``. The trigger
upserts the user through the ingest log, waits until it is applied, then queues the send
and stores the ``Idempotency-Key`` answer in one transaction: a retry with the same key
is the same send, and each call without one is a send of its own.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api import wire
from tidings.api.auth import KeyCache
from tidings.api.errors import request_id_of
from tidings.api.idempotency import Idempotent, idempotent_route, in_transaction
from tidings.api.ingest import _idempotency_key, _replay
from tidings.api.messaging_wire import (
    ERRORS,
    Body,
    document_bodies,
    ignored_body,
    json_body,
    json_response,
    page_answer,
    present_time,
    request_hash,
    resource_id,
)
from tidings.bootstrap import Services
from tidings.domain import limits
from tidings.domain.auth import Role
from tidings.domain.errors import (
    Conflict,
    InvalidRequest,
    ServiceUnavailable,
)
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.domain.messaging import CAMPAIGN_STATES, CHANNELS
from tidings.domain.sending import Enqueued, SendRequest
from tidings.store.lists import ListStore

__all__ = ["campaigns_router", "present_campaign"]

_CREATE = frozenset(
    {
        "type",
        "name",
        "channel",
        "subscription_id",
        "provider_id",
        "list_ids",
        "exclusion_list_ids",
        "send_at",
        "send_in_user_timezone",
        "tags",
        "state",
    }
)
_TRIGGER = frozenset({"user", "event"})
_USER_KNOWN = frozenset(
    {"external_id", "anonymous_id", "email", "phone", "timezone", "locale", "data"}
)


_NO_DELIVERY = {
    "total": 0,
    "pending": 0,
    "sent": 0,
    "failed": 0,
    "skipped": 0,
    "opens": 0,
    "clicks": 0,
    "bounced": 0,
    "unsubscribed": 0,
}


def _now() -> int:
    return time.time_ns() // 1000


def present_campaign(row: dict[str, Any], delivery: dict[str, int]) -> dict[str, Any]:
    body = {
        "id": row["id"],
        "type": row["type"],
        "name": row["name"],
        "channel": row["channel"],
        "subscription_id": row["subscription_id"],
        "provider_id": row["provider_id"],
        "list_ids": row["list_ids"],
        "exclusion_list_ids": row["exclusion_list_ids"],
        "send_at": present_time(row["send_at"]),
        "send_in_user_timezone": row["send_in_user_timezone"],
        "state": row["state"],
        "delivery": delivery,
        "tags": row["tags"],
        "created_at": present_time(row["created_at"]),
        "updated_at": present_time(row["updated_at"]),
    }
    if row["type"] == "blast" and row["state"] in ("loading", "running", "finished"):
        body["progress"] = {"loaded": row["loaded"], "loading": row["state"] == "loading"}
    return body


def present_send(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "external_id": row["external_id"],
        "state": "pending" if row["state"] == "sending" else row["state"],
        "attempts": row["attempts"],
    }
    if row["reason"]:
        out["reason"] = row["reason"]
    if row["sent_at"]:
        out["sent_at"] = present_time(row["sent_at"])
    return out


def campaigns_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client",
        route_class=idempotent_route(services, keys),
        tags=["campaigns"],
        responses=ERRORS,
    )
    assert services.messaging is not None
    messaging = services.messaging
    store = messaging.campaigns

    async def _auth(request: Request, role: Role) -> int:
        return (await keys.authenticate(request, secret=True, role=role)).project.id

    def _present(row: dict[str, Any]) -> dict[str, Any]:
        return present_campaign(row, store.delivery(row["id"]))

    def _fields(value: Any, *, creating: bool) -> dict[str, Any]:
        body = Body(value, _CREATE)
        out: dict[str, Any] = {}
        kind = body.string("type", required=creating, choices=("blast", "trigger"))
        name = body.string("name", required=creating)
        channel = body.string("channel", required=creating, choices=CHANNELS)
        subscription_id = body.integer("subscription_id", minimum=1)
        provider_id = body.integer("provider_id", minimum=1)
        list_ids = body.ids("list_ids")
        exclusions = body.ids("exclusion_list_ids")
        send_at = body.time("send_at")
        in_tz = body.boolean("send_in_user_timezone")
        tags = body.tags()
        state = body.string("state", choices=CAMPAIGN_STATES)
        body.done()
        if creating and state not in (None, "draft"):
            raise Conflict("A campaign starts as a draft.", param="state")
        for key, val in (
            ("type", kind),
            ("name", name),
            ("channel", channel),
            ("subscription_id", subscription_id),
            ("list_ids", list_ids),
            ("exclusion_list_ids", exclusions),
            ("send_at", send_at),
            ("send_in_user_timezone", in_tz),
            ("tags", tags),
        ):
            if val is not None:
                out[key] = val
        if body.has("provider_id"):
            out["provider_id"] = provider_id
        if state is not None and not creating:
            out["state"] = state
        return out

    @router.get("/campaigns", summary="Campaigns, newest first")
    async def list_campaigns(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        page = await run_in_threadpool(store.campaigns, project_id, limit, cursor)
        results = await run_in_threadpool(lambda: [_present(r) for r in page.results])
        return json_response(
            {
                "results": results,
                "nextCursor": page.next_cursor,
                "prevCursor": page.prev_cursor,
                "limit": page.limit,
            }
        )

    @router.post("/campaigns", status_code=201, summary="Create a campaign (editor)")
    @in_transaction
    async def create_campaign(request: Request) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        raw, value = await json_body(request)
        once = Idempotent(services, request, project_id, raw)
        if (replay := await once.replay()) is not None:
            return replay
        values = _fields(value, creating=True)

        def work() -> dict[str, Any]:
            if "subscription_id" not in values:
                default = messaging.subscriptions.default_for(project_id, values["channel"])
                values["subscription_id"] = default.id
            else:
                messaging.subscriptions.types(project_id)  # the defaults exist
            hook = once.hook(201, lambda row: present_campaign(row, _NO_DELIVERY))
            return _present(store.create_campaign(project_id, values, then=hook))

        result = await once.run(work)
        return result if isinstance(result, Response) else json_response(result, 201)

    @router.get("/campaigns/{id}", summary="A campaign, with its delivery counters")
    async def get_campaign(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        campaign_id = resource_id(id, "campaign")
        return json_response(
            await run_in_threadpool(lambda: _present(store.campaign(project_id, campaign_id)))
        )

    @router.patch(
        "/campaigns/{id}",
        summary="Change a campaign; {state: scheduled, send_at} sends a blast (publisher)",
    )
    async def update_campaign(request: Request, id: str) -> Response:
        auth = await keys.authenticate(request, secret=True, role=Role.EDITOR)
        project_id = auth.project.id
        campaign_id = resource_id(id, "campaign")
        _, value = await json_body(request)
        values = _fields(value, creating=False)
        if values.get("state") not in (None, "draft"):
            await keys.authenticate(request, secret=True, role=Role.PUBLISHER)
        return json_response(
            await run_in_threadpool(
                lambda: _present(store.update_campaign(project_id, campaign_id, values))
            )
        )

    @router.delete("/campaigns/{id}", status_code=204, summary="Delete a campaign (editor)")
    async def delete_campaign(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        await run_in_threadpool(store.delete_campaign, project_id, resource_id(id, "campaign"))
        return Response(status_code=204)

    @router.post(
        "/campaigns/{id}/duplicate", status_code=201, summary="A draft copy, templates included"
    )
    async def duplicate_campaign(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        campaign_id = resource_id(id, "campaign")
        await ignored_body(request)
        return json_response(
            await run_in_threadpool(
                lambda: _present(store.duplicate_campaign(project_id, campaign_id))
            ),
            201,
        )

    @router.get("/campaigns/{id}/sends", summary="One row per recipient")
    async def campaign_sends(
        request: Request,
        id: str,
        state: Annotated[str | None, Query(pattern="^(pending|sent|failed|skipped)$")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        campaign_id = resource_id(id, "campaign")
        await run_in_threadpool(store.campaign, project_id, campaign_id)
        page = await run_in_threadpool(store.sends_page, campaign_id, state, limit, cursor)
        return page_answer(page, present_send)

    @router.post("/campaigns/{id}/trigger", summary="Send a trigger campaign to one user")
    @in_transaction
    async def trigger(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        campaign_id = resource_id(id, "campaign")
        raw, value = await json_body(request)
        key = _idempotency_key(request)
        digest = request_hash(request, raw)
        if key is not None:
            record = await run_in_threadpool(services.change_idempotency.get, project_id, key)
            if record is not None:
                return _replay(record, digest)
        body = Body(value, _TRIGGER)
        # 'user' and 'event' hold a 'data' object of up to MAX_DEPTH levels
        user = body.obj("user", required=True, max_depth=limits.MAX_DEPTH + 1)
        event = body.obj("event", max_depth=limits.MAX_DEPTH + 1)
        body.done()
        assert user is not None
        traits = {k: v for k, v in user.items() if k in _USER_KNOWN}
        extra = {k: v for k, v in user.items() if k not in _USER_KNOWN}
        if extra:
            merged = dict(traits.get("data") or {})
            merged.update(extra)
            traits["data"] = merged
        problems = wire.Problems()
        payload = wire.validate_profile(traits, "user", problems, default_locale=None)
        if not payload.get("external_id") and not problems:
            problems.add("user.external_id", "parameter_missing", "'external_id' is required.")
        problems.raise_if_any()
        campaign = await run_in_threadpool(store.campaign, project_id, campaign_id)
        if campaign["type"] != "trigger":
            raise Conflict(f"Campaign {campaign_id} is a blast, not a trigger campaign.")
        if campaign["state"] != "running":
            raise Conflict(f"Campaign {campaign_id} is {campaign['state']}, not running.")
        external_id = payload["external_id"]
        partition = partition_of(project_id, external_id, services.log.partitions)
        outcome = await services.committer.append(
            AppendRequest(
                [LogEntry(project_id, "user", partition, payload, _now())], want_positions=True
            )
        )
        if not await services.wait_processed(outcome.positions, services.settings.sync_timeout):
            raise ServiceUnavailable(
                "The user was accepted but is not processed yet; retry shortly.", retry_after=2
            )
        profile_id = await run_in_threadpool(
            services.profiles.profile_id_for, project_id, "external", external_id
        )
        if profile_id is None:  # erased meanwhile
            raise ServiceUnavailable("The user could not be stored; retry.", retry_after=1)
        reference = f"trigger:{key}" if key is not None else f"trigger:{request_id_of(request)}"
        answer = json_response({"success": True})

        def work() -> Enqueued:
            now = _now()
            with services.db.writer.begin() as conn:
                result = messaging.sends.enqueue(
                    conn,
                    SendRequest(
                        project_id=project_id,
                        campaign_id=campaign_id,
                        profile_id=profile_id,
                        reference=reference,
                        context={"event": event or {}},
                    ),
                    now,
                )
                if result is Enqueued.NOT_RUNNING:
                    raise Conflict(f"Campaign {campaign_id} is not running.")
                if key is not None:
                    ListStore.remember_answer(
                        conn, project_id, key, digest, 200, bytes(answer.body), now
                    )
            return result

        try:
            await run_in_threadpool(work)
        except sa.exc.IntegrityError:
            if key is None:
                raise
            record = await run_in_threadpool(services.change_idempotency.get, project_id, key)
            if record is None:
                raise ServiceUnavailable(
                    "Idempotency record changed concurrently; retry."
                ) from None
            return _replay(record, digest)
        return answer

    _ = InvalidRequest
    document_bodies(router)
    return router
