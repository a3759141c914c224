"""The journeys API (secret key): journeys, their step graphs, triggers, paths, dry runs.

Roles: reads any secret key, writes ``editor``, going ``live`` ``publisher``. Shapes are
those of ``ENGAGEMENT.md`` (Journeys); behaviour in docs/journeys.md.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api import lists_wire, wire
from tidings.api.auth import AuthContext, KeyCache
from tidings.api.idempotency import idempotent_route, not_idempotent
from tidings.api.lists_wire import json_object, problem, read_body
from tidings.api.messaging_wire import document_bodies
from tidings.api.presenters import iso
from tidings.bootstrap import Services
from tidings.domain.auth import Role, authorize
from tidings.domain.errors import FieldError, InvalidRequest, NotFound, ServiceUnavailable
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.domain.journeys import parse_settings, parse_steps, step_to_json
from tidings.journeys.simulate import simulate
from tidings.journeys.store import JourneyRow

__all__ = ["journeys_router"]

_encode = msgspec.json.Encoder().encode
_ID = re.compile(r"^[0-9]{1,18}$")
_FIELDS = frozenset({"name", "description", "tags", "status", "settings", "archived"})


# Every answer but success is the problem envelope; the statuses each route can give.
_READ: lists_wire.Responses = {
    400: problem("A malformed query parameter or cursor"),
    401: problem("Missing, unknown or revoked key, or a public key"),
    404: problem("No journey with this id in the key's project"),
}
_WRITE: lists_wire.Responses = {
    **_READ,
    400: problem("A malformed body (every problem listed in errors)"),
    403: problem("The key's role is below editor (publisher to go live)"),
    409: problem("A state the change does not fit (not live, archived, back to draft)"),
    413: problem("A body over 1 MB"),
    415: problem("Content-Type is not JSON"),
    422: problem("A value is not acceptable; errors[].param names the field or step"),
    503: problem("The user is not applied yet; retry"),
}


def _now() -> int:
    return time.time_ns() // 1000


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json")


def _journey_id(raw: str) -> int:
    # Ids are 32-bit integers: a larger one names no journey (and PostgreSQL would refuse
    # to compare it with the column).
    if not _ID.match(raw) or int(raw) > 2_147_483_647:
        raise NotFound(f"No journey with id '{raw[:40]}'.", param="id")
    return int(raw)


def present_journey(row: JourneyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "tags": row.tags,
        "status": row.status,
        "archived": row.archived,
        "settings": row.settings,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "published_at": iso(row.published_at),
    }


def _fields(body: dict[str, Any], *, create: bool) -> dict[str, Any]:
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(
                f"Unknown field '{name}'; allowed: {sorted(_FIELDS)}.",
                code="parameter_unknown",
                param=name,
            )
    if "name" in body or create:
        title = body.get("name")
        if not isinstance(title, str) or not title.strip() or len(title) > 255:
            errors.append(FieldError("name", "parameter_invalid_format", "1 to 255 characters"))
        else:
            out["name"] = title.strip()
    if "description" in body:
        d = body["description"]
        if d is not None and (not isinstance(d, str) or len(d) > 10_000):
            errors.append(FieldError("description", "parameter_invalid_format", "a string"))
        else:
            out["description"] = d
    if "tags" in body:
        tags = body["tags"]
        if (
            not isinstance(tags, list)
            or len(tags) > 50
            or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags)
        ):
            errors.append(
                FieldError("tags", "parameter_invalid_format", "up to 50 strings of 1-64")
            )
        else:
            out["tags"] = tags
    if "status" in body:
        status = body["status"]
        allowed = ("draft",) if create else ("draft", "live", "off")
        if status not in allowed:
            errors.append(
                FieldError("status", "parameter_invalid_format", f"one of {', '.join(allowed)}")
            )
        else:
            out["status"] = status
    if "archived" in body:
        if not isinstance(body["archived"], bool):
            errors.append(FieldError("archived", "parameter_invalid_format", "true or false"))
        else:
            out["archived"] = body["archived"]
    if errors:
        from tidings.domain.errors import ValidationFailed

        raise ValidationFailed(
            f"{errors[0].param}: {errors[0].message}", param=errors[0].param, errors=errors
        )
    if "settings" in body:
        parse_settings(body["settings"])  # raises with every problem
        out["settings"] = body["settings"] or {}
    return out


def _trigger_user(raw: object, default_locale: str | None) -> dict[str, Any]:
    """``user: {external_id, email?, phone?, timezone?, locale?, data?, …traits}``: the
    profile fields as ``PATCH /users`` takes them; other keys are traits (into ``data``)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("user must be an object.", code="parameter_missing", param="user")
    known = wire.PROFILE_FIELDS
    item = {k: v for k, v in raw.items() if k in known}
    extra = {k: v for k, v in raw.items() if k not in known}
    if extra:
        data = item.get("data")
        item["data"] = {**extra, **(data if isinstance(data, dict) else {})}
    problems = wire.Problems()
    out = wire.validate_profile(item, "user", problems, default_locale=default_locale)
    if not out.get("external_id"):
        problems.add("user.external_id", "parameter_missing", "external_id is required")
    problems.raise_if_any()
    return out


def journeys_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client", route_class=idempotent_route(services, keys), tags=["journeys"]
    )
    store = services.journey_store
    engine = services.journeys
    assert store is not None and engine is not None

    async def _auth(request: Request, role: Role) -> AuthContext:
        return await keys.authenticate(request, secret=True, role=role)

    async def _found(project_id: int, journey_id: int) -> JourneyRow:
        row = await run_in_threadpool(store.get, project_id, journey_id)
        if row is None:
            raise NotFound(f"No journey with id {journey_id}.", param="id")
        return row

    @router.get("/journeys", summary="Journeys, newest first", responses=_READ)
    async def list_journeys(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        auth = await _auth(request, Role.SUPPORT)
        rows, nxt, prev = await run_in_threadpool(
            lambda: store.page(auth.project.id, limit=limit, cursor=cursor)
        )
        return _json(
            {
                "results": [present_journey(r) for r in rows],
                "nextCursor": nxt,
                "prevCursor": prev,
                "limit": limit,
            }
        )

    @router.post(
        "/journeys", status_code=201, summary="Create a journey (editor)", responses=_WRITE
    )
    async def create_journey(request: Request) -> Response:
        auth = await _auth(request, Role.EDITOR)
        raw, _ = await read_body(request)
        given = _fields(json_object(raw, refuse_nul=True), create=True)
        row = await run_in_threadpool(
            lambda: store.create(
                auth.project.id,
                name=given["name"],
                description=given.get("description"),
                tags=given.get("tags", []),
                settings=given.get("settings", {}),
                now=_now(),
            )
        )
        return _json(present_journey(row), 201)

    @router.get("/journeys/{id}", summary="A journey, with per-step counts", responses=_READ)
    async def get_journey(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.SUPPORT)
        row = await _found(auth.project.id, _journey_id(id))
        at = _now()
        stats = await run_in_threadpool(store.stats, row.id)
        body = {**present_journey(row), "stats": stats, "stats_at": iso(at)}
        if row.settings.get("goal"):
            body["goal"] = await run_in_threadpool(store.goals, row.id)
        return _json(body)

    @router.patch(
        "/journeys/{id}",
        summary="Change, publish (live), pause (off), archive",
        responses=_WRITE,
    )
    async def update_journey(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.EDITOR)
        journey_id = _journey_id(id)
        raw, _ = await read_body(request)
        given = _fields(json_object(raw, refuse_nul=True), create=False)
        if given.get("status") == "live":
            authorize(auth.key, secret=True, role=Role.PUBLISHER)
        await _found(auth.project.id, journey_id)
        status = given.pop("status", None)
        archived = given.pop("archived", None)
        row = await run_in_threadpool(
            lambda: store.update(
                auth.project.id,
                journey_id,
                now=_now(),
                values=given,
                status=status,
                archived=archived,
            )
        )
        if services.journey_worker is not None:
            services.journey_worker.wake.set()  # resumed: its overdue timers fire now
        return _json(present_journey(row))

    @router.delete(
        "/journeys/{id}",
        status_code=204,
        response_class=Response,
        summary="Delete (editor)",
        responses=_WRITE,
    )
    async def delete_journey(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.EDITOR)
        journey_id = _journey_id(id)
        if not await run_in_threadpool(
            lambda: store.delete(auth.project.id, journey_id, now=_now())
        ):
            raise NotFound(f"No journey with id {journey_id}.", param="id")
        return Response(status_code=204)

    def _graph_json(steps: dict[str, Any]) -> dict[str, Any]:
        return {uuid: step_to_json(step) for uuid, step in steps.items()}

    @router.get(
        "/journeys/{id}/steps", summary="The step graph, keyed by step uuid", responses=_READ
    )
    async def get_steps(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.SUPPORT)
        row = await _found(auth.project.id, _journey_id(id))
        return _json(_graph_json(await run_in_threadpool(store.steps, row.id)))

    @router.put("/journeys/{id}/steps", summary="Replace the step graph (editor)", responses=_WRITE)
    async def put_steps(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.EDITOR)
        journey_id = _journey_id(id)
        raw, _ = await read_body(request)
        steps = parse_steps(json_object(raw, refuse_nul=True))
        await _found(auth.project.id, journey_id)
        stored = await run_in_threadpool(
            lambda: store.put_steps(auth.project.id, journey_id, steps, now=_now())
        )
        if services.journey_worker is not None:
            services.journey_worker.wake.set()  # users moved off removed steps run now
        return _json(_graph_json(stored))

    async def _upsert_user(project_id: int, user: dict[str, Any]) -> str:
        """Append the user's fields to the log and wait until applied: its profile id."""
        external_id = user["external_id"]
        partition = partition_of(project_id, external_id, services.log.partitions)
        entry = LogEntry(
            project_id=project_id,
            kind="user",
            partition=partition,
            payload=user,
            accepted_at=_now(),
        )
        outcome = await services.committer.append(AppendRequest([entry], want_positions=True))
        if not await services.wait_processed(outcome.positions, services.settings.sync_timeout):
            raise ServiceUnavailable(
                "The user was accepted but is not applied yet; retry shortly.", retry_after=2
            )
        profile_id = await run_in_threadpool(
            services.profiles.profile_id_for, project_id, "external", external_id
        )
        if profile_id is None:  # pragma: no cover - erased between the two
            raise ServiceUnavailable("The user changed meanwhile; retry.", retry_after=1)
        return str(profile_id)

    @router.post("/journeys/{id}/trigger", summary="Enter one user (editor)", responses=_WRITE)
    async def trigger(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.EDITOR)
        journey_id = _journey_id(id)
        raw, _ = await read_body(request)
        body = json_object(raw, refuse_nul=True)
        for name in body:
            if name not in ("user", "event", "entrance_id"):
                raise InvalidRequest(
                    f"Unknown field '{name}'.", code="parameter_unknown", param=name
                )
        user = _trigger_user(body.get("user"), auth.project.locale)
        event = body.get("event")
        if event is not None and not isinstance(event, dict):
            raise InvalidRequest("event must be an object.", param="event")
        entrance = body.get("entrance_id")
        if entrance is not None and not isinstance(entrance, str | int):
            raise InvalidRequest("entrance_id must be a step uuid or id.", param="entrance_id")
        row = await _found(auth.project.id, journey_id)
        if row.status != "live":
            from tidings.domain.errors import Conflict

            raise Conflict(f"Journey {journey_id} is not live ({row.status}).", param="id")
        profile_id = await _upsert_user(auth.project.id, user)
        key = request.headers.get("idempotency-key")
        await run_in_threadpool(
            lambda: engine.trigger(
                auth.project.id,
                journey_id,
                profile_id,
                entrance_uuid=None if entrance is None else str(entrance),
                event=event,
                unique=f"trigger:{key}" if key else None,
            )
        )
        if services.journey_worker is not None:
            services.journey_worker.wake.set()
        return _json({"success": True})

    @router.get(
        "/journeys/{id}/users/{external_id}",
        summary="One user's entrances and paths",
        responses=_READ,
    )
    async def user_path(request: Request, id: str, external_id: str) -> Response:
        auth = await _auth(request, Role.SUPPORT)
        row = await _found(auth.project.id, _journey_id(id))
        profile_id = await run_in_threadpool(
            services.profiles.profile_id_for, auth.project.id, "external", external_id
        )
        if profile_id is None:
            raise NotFound(f"No user with external_id '{external_id}'.", param="external_id")
        entrances = await run_in_threadpool(store.user_entrances, row.id, str(profile_id))
        for e in entrances:
            for name in ("created_at", "ended_at", "goal_reached_at"):
                e[name] = iso(e[name])
            for p in e["path"]:
                p["entered_at"] = iso(p["entered_at"])
                p["completed_at"] = iso(p["completed_at"])
        return _json({"external_id": external_id, "results": entrances})

    @router.post(
        "/journeys/{id}/simulate",
        summary="Dry run: the path one user would take",
        responses=_WRITE,
    )
    @not_idempotent("read-only: a dry run, changes nothing")
    async def simulate_route(request: Request, id: str) -> Response:
        auth = await _auth(request, Role.SUPPORT)
        row = await _found(auth.project.id, _journey_id(id))
        raw, _ = await read_body(request)
        body = json_object(raw, refuse_nul=True)
        result = await run_in_threadpool(
            lambda: simulate(services.db.reader, row, body, now=_now())
        )
        return _json(result)

    document_bodies(router)  # the bodies read by hand, in the OpenAPI document
    return router
