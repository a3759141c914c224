"""``Idempotency-Key`` on the state-changing routes of ``/api/client``.

Two mechanisms, one set of rules (docs/api.md, "Idempotency"):

- **In the change's transaction** (:class:`Idempotent`): routes whose store call takes a
  ``then`` hook write the stored answer in the transaction of the change itself, so a
  retry replays it and a concurrent duplicate rolls back and replays the winner's. Their
  handlers are marked with :func:`in_transaction`.
- **Around the handler** (:func:`idempotent_route`, the routers' ``route_class``): every
  other POST/PATCH/PUT route first reserves the key (a record without an answer in the
  ``change_idempotency`` store: a concurrent duplicate hears ``409
  idempotency_in_progress``), runs the handler, then stores its status and body.

Answers that are stored: every answer below 500, refusals included (a retry of a refused
request answers the same), except 401, 403 and 429 (about the caller's key or rate, not
the request) and the ``idempotency_*`` conflicts. A 5xx answer (or an exception) releases
the reservation: the retry runs afresh. A reservation left by a process that died holds
until the key's TTL (``idempotency_ttl_hours``, 24 h) expires it; until then the key
answers ``409 idempotency_in_progress``.

Routes that honour no key are marked with :func:`not_idempotent` and a reason (read-only
POSTs, and the public-key routes whose user is named outside the body).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tidings.api import wire
from tidings.api.auth import KeyCache
from tidings.api.bodies import read_limited
from tidings.api.errors import error_response, status_of
from tidings.api.ingest import _idempotency_key, _replay
from tidings.bootstrap import Services
from tidings.domain.errors import ServiceUnavailable, TidingsError
from tidings.store.lists import ListStore
from tidings.store.tables import idempotency_keys

__all__ = [
    "EXCLUDED",
    "Idempotent",
    "idempotent_route",
    "in_transaction",
    "not_idempotent",
]

_encode = msgspec.json.Encoder().encode
_CHANGING = frozenset({"POST", "PATCH", "PUT"})
_NOT_STORED = frozenset({401, 403, 429})
_MARK = "__tidings_idempotency__"

F = TypeVar("F", bound=Callable[..., Any])

# (method, path) → why the route honours no Idempotency-Key. Filled by @not_idempotent.
EXCLUDED: dict[tuple[str, str], str] = {}


def _now() -> int:
    return time.time_ns() // 1000


def in_transaction(endpoint: F) -> F:
    """The handler stores its answer in the change's own transaction (:class:`Idempotent`)."""
    setattr(endpoint, _MARK, "in_transaction")
    return endpoint


def not_idempotent(reason: str) -> Callable[[F], F]:
    """The route honours no ``Idempotency-Key``, for ``reason`` (listed in docs/api.md)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _MARK, reason)
        return endpoint

    return mark


def _hash(request: Request, raw: bytes) -> str:
    return hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + raw
    ).hexdigest()


class Idempotent:
    """An ``Idempotency-Key``'s stored answer is written by the change itself (``hook``), so
    a retry replays it and a concurrent duplicate rolls back and replays the winner's."""

    def __init__(self, services: Services, request: Request, project_id: int, raw: bytes) -> None:
        self.services = services
        self.project_id = project_id
        self.key = _idempotency_key(request)
        self.hash = _hash(request, raw)

    async def replay(self) -> Response | None:
        if self.key is None:
            return None
        return await _stored(self.services, self.project_id, self.key, self.hash)

    def hook(self, status: int, present: Callable[[Any], dict[str, Any]]) -> Any:
        key = self.key
        if key is None:
            return None

        def remember(conn: sa.Connection, result: Any) -> None:
            body = _encode(present(result))
            ListStore.remember_answer(conn, self.project_id, key, self.hash, status, body, _now())

        return remember

    async def run(self, work: Callable[[], Any]) -> Any | Response:
        """``work()`` in a thread; a lost race on the key answers with the winner's reply."""
        try:
            return await run_in_threadpool(work)
        except sa.exc.IntegrityError:
            if self.key is None:
                raise
            replay = await self.replay()
            if replay is None:  # pragma: no cover - the winner's record expired meanwhile
                raise ServiceUnavailable(
                    "Idempotency record changed concurrently; retry."
                ) from None
            return replay


async def _stored(services: Services, project_id: int, key: str, digest: str) -> Response | None:
    """The replay of the key's stored answer; None if it has none (or it expired, and is
    forgotten). ``409`` if it was used for another request or is still in flight."""
    store = services.change_idempotency
    record = await run_in_threadpool(store.get, project_id, key)
    if record is None:
        return None
    expired_before = _now() - services.settings.idempotency_ttl_hours * 3_600_000_000
    if record.created_at < expired_before:
        await run_in_threadpool(store.forget, project_id, key, created_before=expired_before)
        return None
    return _replay(record, digest)


def _storable(response: Response, code: str | None) -> bool:
    status = response.status_code
    if status >= 500 or status in _NOT_STORED:
        return False
    if code is not None and code.startswith("idempotency_"):
        return False
    return status == 204 or isinstance(getattr(response, "body", None), bytes)


class _Guard:
    """One request with a key, on a route guarded around its handler."""

    def __init__(self, services: Services, project_id: int, key: str, digest: str) -> None:
        self.services = services
        self.project_id = project_id
        self.key = key
        self.digest = digest

    def _where(self) -> Any:
        return sa.and_(
            idempotency_keys.c.project_id == self.project_id, idempotency_keys.c.key == self.key
        )

    def reserve(self) -> bool:
        """A record without an answer; False if the key has a record already."""
        try:
            with self.services.change_idempotency.writer.begin() as conn:
                conn.execute(
                    sa.insert(idempotency_keys).values(
                        project_id=self.project_id,
                        key=self.key,
                        request_hash=self.digest,
                        status=None,
                        body=None,
                        created_at=_now(),
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def answer(self, status: int, body: bytes) -> None:
        self.services.change_idempotency.complete(self.project_id, self.key, status, body)

    def remember(self, status: int, body: bytes) -> None:
        """Store a refusal of an in-transaction route (which reserved nothing)."""
        try:
            with self.services.change_idempotency.writer.begin() as conn:
                ListStore.remember_answer(
                    conn, self.project_id, self.key, self.digest, status, body, _now()
                )
        except sa.exc.IntegrityError:
            pass  # a twin stored its answer first: the next retry replays that one

    def release(self) -> None:
        with self.services.change_idempotency.writer.begin() as conn:
            conn.execute(
                sa.delete(idempotency_keys).where(
                    self._where(), idempotency_keys.c.status.is_(None)
                )
            )


async def _guard(
    services: Services,
    keys: KeyCache,
    request: Request,
    handler: Callable[[Request], Awaitable[Response]],
    *,
    reserve: bool,
) -> Response:
    key = _idempotency_key(request)  # 400 idempotency_key_invalid, before anything else
    if key is None:
        return await handler(request)
    try:
        # Secret keys only: every guarded route needs one (the public-key routes are
        # excluded), and a public key, which web pages carry, must not read a stored answer.
        auth = await keys.authenticate_header(request.headers.get("authorization", ""), secret=True)
    except TidingsError:
        return await handler(request)  # no secret key to hold the key under: the route refuses
    project_id = auth.project.id
    raw = await read_limited(request, wire.MAX_BODY_BYTES)
    # The handler reads the body again: Request.stream() and .body() give back ``_body``,
    # the attribute Request.body() caches the body in.
    request._body = raw
    guard = _Guard(services, project_id, key, _hash(request, raw))
    if reserve:
        if (replay := await _stored(services, project_id, key, guard.digest)) is not None:
            return replay
        if not await run_in_threadpool(guard.reserve):
            replay = await _stored(services, project_id, key, guard.digest)
            if replay is None:  # pragma: no cover - expired between the two reads
                raise ServiceUnavailable("Idempotency record changed concurrently; retry.")
            return replay
    code: str | None = None
    try:
        response = await handler(request)
    except TidingsError as error:
        code = error.code
        response = error_response(request, error)
        if status_of(error) >= 500 and reserve:
            await run_in_threadpool(guard.release)
            return response
    except BaseException:
        if reserve:
            await run_in_threadpool(guard.release)
        raise
    if response.headers.get("idempotent-replayed") is not None:
        return response  # the handler replayed a stored answer itself
    if _storable(response, code):
        body = b"" if response.status_code == 204 else bytes(response.body)
        store = guard.answer if reserve else guard.remember
        if reserve or response.status_code >= 400:
            await run_in_threadpool(store, response.status_code, body)
    elif reserve:
        await run_in_threadpool(guard.release)
    return response


def idempotent_route(services: Services, keys: KeyCache) -> type[APIRoute]:
    """The ``route_class`` of the ``/api/client`` routers: POST/PATCH/PUT handlers are
    guarded around (unless marked :func:`in_transaction`, which only records their
    refusals, or :func:`not_idempotent`)."""

    class IdempotentRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            mark = getattr(self.endpoint, _MARK, None)
            changing = _CHANGING & set(self.methods or ())
            if not changing:
                return handler
            if mark not in (None, "in_transaction"):
                for method in changing:
                    EXCLUDED[(method, self.path)] = str(mark)
                return handler
            reserve = mark is None

            async def guarded(request: Request) -> Response:
                return await _guard(services, keys, request, handler, reserve=reserve)

            return guarded

    return IdempotentRoute
