"""Subscription types, users' states, and the preference centre.

- ``GET|POST /subscriptions``, ``GET|PATCH /subscriptions/{id}`` (writes: admin).
- ``GET|PATCH /users/{external_id}/subscriptions`` and ``POST /subscriptions/batch``
  (writes: editor).
- The preference centre: ``POST /users/{external_id}/sessions`` (secret key, editor)
  gives a token valid 15 minutes, signed with this installation's key (itsdangerous);
  with a **public** key and ``X-Spotzee-User-Token`` (or ``X-Tidings-User-Token``),
  ``GET /users/me`` and ``PATCH /subscriptions/me`` (public types only).

Every change goes through ``SubscriptionStore.set_state``: it records the
``subscribed``/``unsubscribed`` event, and an unsubscribe answers only once nothing of
that type is on its way to the user.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from tidings.api.auth import KeyCache
from tidings.api.idempotency import idempotent_route, not_idempotent
from tidings.api.messaging_wire import (
    ERRORS,
    Body,
    document_bodies,
    ignored_body,
    json_body,
    json_response,
    present_time,
    resource_id,
)
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.errors import (
    AuthenticationRequired,
    FieldError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    ValidationFailed,
)
from tidings.domain.ingest import partition_of
from tidings.domain.messaging import CHANNELS
from tidings.messaging.subscriptions import SubscriptionType

__all__ = ["SESSION_SECONDS", "subscriptions_router"]

SESSION_SECONDS = 15 * 60
MAX_CHANGES = 100
MAX_BATCH = 1000
_TYPE_FIELDS = frozenset({"name", "channel", "is_public", "requires_opt_in"})
_CHANGE_FIELDS = frozenset({"subscription_id", "state"})
_BATCH_FIELDS = frozenset({"external_id", "anonymous_id", "subscription_id", "state"})
_TOKEN_HEADERS = ("x-spotzee-user-token", "x-tidings-user-token")


def _now() -> int:
    return time.time_ns() // 1000


def present_type(t: SubscriptionType) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "channel": t.channel,
        "is_public": t.is_public,
        "requires_opt_in": t.requires_opt_in,
        "is_default": t.is_default,
        "created_at": present_time(t.created_at),
        "updated_at": present_time(t.updated_at),
    }


def _changes(value: Any) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise InvalidRequest("The body must be a JSON array of {subscription_id, state}.")
    if not 1 <= len(value) <= MAX_CHANGES:
        raise InvalidRequest(f"Send 1 to {MAX_CHANGES} changes.", param="body")
    out = []
    for index, item in enumerate(value):
        body = Body(item, _CHANGE_FIELDS, path=f"[{index}]")
        sub = body.integer("subscription_id", required=True, minimum=1)
        state = body.integer("state", required=True, maximum=2)
        if body.problems:
            body.done()
        if sub is not None and state is not None:
            out.append((sub, state))
    return out


def subscriptions_router(services: Services, keys: KeyCache) -> APIRouter:
    router = APIRouter(
        prefix="/api/client",
        route_class=idempotent_route(services, keys),
        tags=["subscriptions"],
        responses=ERRORS,
    )
    assert services.messaging is not None
    store = services.messaging.subscriptions
    profiles = services.profiles

    def _serializer() -> URLSafeTimedSerializer:
        assert services.messaging is not None
        secret = services.messaging.secrets.get("preferences")
        return URLSafeTimedSerializer(secret, salt="tidings.preference-centre")

    async def _auth(request: Request, role: Role) -> int:
        return (await keys.authenticate(request, secret=True, role=role)).project.id

    async def _profile_id(project_id: int, external_id: str) -> str:
        partition = partition_of(project_id, external_id, services.log.partitions)
        if not await services.wait_accepted([partition], services.settings.sync_timeout):
            raise ServiceUnavailable(
                "Earlier writes for this user are not processed yet; retry shortly.",
                retry_after=2,
            )
        found = await run_in_threadpool(
            profiles.profile_id_for, project_id, "external", external_id
        )
        if found is None:
            raise NotFound(f"No user with external_id '{external_id[:80]}'.", param="external_id")
        return found

    def _types_by_id(project_id: int) -> dict[int, SubscriptionType]:
        return {t.id: t for t in store.types(project_id)}

    def _states_answer(
        project_id: int, profile_id: str, public_only: bool = False
    ) -> dict[str, Any]:
        rows = store.states(project_id, profile_id)
        if public_only:
            rows = [r for r in rows if r["is_public"]]
        return {"results": rows, "nextCursor": None, "prevCursor": None, "limit": len(rows)}

    def _apply(
        project_id: int,
        profile_id: str,
        changes: list[tuple[int, int]],
        *,
        source: str,
        public_only: bool,
    ) -> dict[str, Any]:
        types = _types_by_id(project_id)
        for index, (sub, _) in enumerate(changes):
            t = types.get(sub)
            if t is None or (public_only and not t.is_public):
                raise ValidationFailed(
                    f"No subscription type {sub}.",
                    param=f"[{index}].subscription_id",
                    errors=[
                        FieldError(
                            f"[{index}].subscription_id", "resource_missing", f"No type {sub}."
                        )
                    ],
                )
        store.set_many(
            project_id, [(profile_id, s, st) for s, st in changes], _now(), source=source
        )
        return _states_answer(project_id, profile_id, public_only)

    # -- types --------------------------------------------------------------------------------

    @router.get("/subscriptions", summary="Subscription types")
    async def list_types(request: Request) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        types = await run_in_threadpool(store.types, project_id)
        return json_response(
            {
                "results": [present_type(t) for t in types],
                "nextCursor": None,
                "prevCursor": None,
                "limit": len(types),
            }
        )

    @router.post("/subscriptions", status_code=201, summary="Add a subscription type (admin)")
    async def create_type(request: Request) -> Response:
        project_id = await _auth(request, Role.ADMIN)
        _, value = await json_body(request)
        body = Body(value, _TYPE_FIELDS)
        name = body.string("name", required=True)
        channel = body.string("channel", required=True, choices=CHANNELS)
        is_public = body.boolean("is_public")
        opt_in = body.boolean("requires_opt_in")
        body.done()
        assert name is not None and channel is not None
        created = await run_in_threadpool(
            lambda: store.create_type(
                project_id,
                name=name,
                channel=channel,
                is_public=True if is_public is None else is_public,
                requires_opt_in=bool(opt_in),
            )
        )
        return json_response(present_type(created), 201)

    @router.post("/subscriptions/batch", summary="Set many users' states (editor)")
    async def batch(request: Request) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        _, value = await json_body(request)
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
            raise InvalidRequest(f"The body must be a JSON array of 1 to {MAX_BATCH} items.")
        types = await run_in_threadpool(_types_by_id, project_id)
        results: list[dict[str, Any]] = []
        ready: list[tuple[int, str, int, int]] = []
        partitions = set()
        for index, item in enumerate(value):
            body = Body(item, _BATCH_FIELDS, path=f"[{index}]")
            external_id = body.string("external_id")
            anonymous_id = body.string("anonymous_id")
            sub = body.integer("subscription_id", required=True, minimum=1)
            state = body.integer("state", required=True, maximum=2)
            result: dict[str, Any] = {"index": index}
            if external_id is not None:
                result["external_id"] = external_id
            if anonymous_id is not None:
                result["anonymous_id"] = anonymous_id
            if external_id is None and anonymous_id is None and not body.problems:
                body.problems.add(f"[{index}]", "parameter_missing", "external_id or anonymous_id.")
            if sub is not None and sub not in types and not body.problems:
                body.problems.add(
                    f"[{index}].subscription_id", "resource_missing", f"No subscription type {sub}."
                )
            if body.problems:
                result["error"] = body.problems.as_item_error()
            else:
                identity = external_id or anonymous_id or ""
                partitions.add(partition_of(project_id, identity, services.log.partitions))
                result.update(subscription_id=sub, state=state)
            results.append(result)
        if partitions and not await services.wait_accepted(
            partitions, services.settings.sync_timeout
        ):
            raise ServiceUnavailable(
                "Earlier writes for these users are not processed yet; retry shortly.",
                retry_after=2,
            )

        def work() -> None:
            for result in results:
                if "error" in result:
                    continue
                kind, value_ = (
                    ("external", result["external_id"])
                    if "external_id" in result
                    else ("anonymous", result["anonymous_id"])
                )
                profile_id = profiles.profile_id_for(project_id, kind, value_)
                if profile_id is None:
                    result["error"] = {"code": "resource_missing", "message": "No such user."}
                    continue
                ready.append(
                    (result["index"], profile_id, result["subscription_id"], result["state"])
                )
            if ready:
                store.set_many(
                    project_id, [(p, s, st) for _, p, s, st in ready], _now(), source="api"
                )

        await run_in_threadpool(work)
        failed = sum(1 for r in results if "error" in r)
        return json_response(
            {"results": results, "succeeded": len(results) - failed, "failed": failed}
        )

    # -- the preference centre (public key + user token) ---------------------------------------

    async def _session(request: Request) -> tuple[int, str]:
        auth = await keys.authenticate(request, secret=False)
        token = next((request.headers[h] for h in _TOKEN_HEADERS if h in request.headers), None)
        if not token:
            raise AuthenticationRequired(
                "A user token is required: X-Spotzee-User-Token (from POST /users/{id}/sessions)."
            )
        try:
            claims = _serializer().loads(token, max_age=SESSION_SECONDS)
        except SignatureExpired:
            raise AuthenticationRequired("The user token has expired.") from None
        except BadSignature:
            raise AuthenticationRequired("The user token is not valid.") from None
        if not isinstance(claims, dict) or claims.get("p") != auth.project.id:
            raise PermissionDenied("The user token belongs to another project.")
        return auth.project.id, str(claims["u"])

    @router.get("/users/me", summary="The user of a preference-centre token (public key)")
    async def me(request: Request) -> Response:
        project_id, profile_id = await _session(request)
        profile = await run_in_threadpool(profiles.get_profile, project_id, profile_id)
        if profile is None:
            raise NotFound("The user no longer exists.")
        states = await run_in_threadpool(_states_answer, project_id, profile_id, True)
        return json_response(
            {
                "external_id": profile["external_id"],
                "email": profile["email"],
                "phone": profile["phone"],
                "timezone": profile["timezone"],
                "locale": profile["locale"],
                "subscriptions": states["results"],
            }
        )

    @router.patch("/subscriptions/me", summary="Change my subscriptions (public key + token)")
    @not_idempotent("public key: the user is named by a token or headers, not the body")
    async def patch_me(request: Request) -> Response:
        project_id, profile_id = await _session(request)
        _, value = await json_body(request)
        changes = _changes(value)
        answer = await run_in_threadpool(
            lambda: _apply(project_id, profile_id, changes, source="preferences", public_only=True)
        )
        return json_response(answer)

    @router.get("/subscriptions/{id}", summary="A subscription type")
    async def get_type(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        found = await run_in_threadpool(
            store.get_type, project_id, resource_id(id, "subscription type")
        )
        return json_response(present_type(found))

    @router.patch("/subscriptions/{id}", summary="Change a subscription type (admin)")
    async def update_type(request: Request, id: str) -> Response:
        project_id = await _auth(request, Role.ADMIN)
        sub = resource_id(id, "subscription type")
        _, value = await json_body(request)
        body = Body(value, _TYPE_FIELDS)
        values: dict[str, Any] = {}
        if (name := body.string("name")) is not None:
            values["name"] = name
        if body.has("channel"):
            body.problems.add("channel", "parameter_unknown", "A type's channel cannot change.")
        for flag in ("is_public", "requires_opt_in"):
            if (v := body.boolean(flag)) is not None:
                values[flag] = v
        body.done()
        updated = await run_in_threadpool(lambda: store.update_type(project_id, sub, **values))
        return json_response(present_type(updated))

    # -- one user's states ---------------------------------------------------------------------

    @router.get("/users/{external_id}/subscriptions", summary="A user's subscription states")
    async def user_states(request: Request, external_id: str) -> Response:
        project_id = await _auth(request, Role.SUPPORT)
        profile_id = await _profile_id(project_id, external_id)
        return json_response(await run_in_threadpool(_states_answer, project_id, profile_id))

    @router.patch("/users/{external_id}/subscriptions", summary="Set a user's states (editor)")
    async def set_user_states(request: Request, external_id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        _, value = await json_body(request)
        changes = _changes(value)
        profile_id = await _profile_id(project_id, external_id)
        answer = await run_in_threadpool(
            lambda: _apply(project_id, profile_id, changes, source="api", public_only=False)
        )
        return json_response(answer)

    @router.post(
        "/users/{external_id}/sessions",
        summary="A preference-centre token for a user, valid 15 minutes (editor)",
    )
    @not_idempotent("changes nothing: signs a short-lived token")
    async def session(request: Request, external_id: str) -> Response:
        project_id = await _auth(request, Role.EDITOR)
        await ignored_body(request)
        profile_id = await _profile_id(project_id, external_id)
        token = _serializer().dumps({"p": project_id, "u": profile_id})
        return json_response(
            {"token": token, "expires_at": present_time(_now() + SESSION_SECONDS * 1_000_000)},
        )

    document_bodies(router)
    return router
