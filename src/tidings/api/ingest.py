"""The hot ingest routes, as plain Starlette endpoints decoding with msgspec.

Order of checks: key → content type → body size → idempotency → JSON → validation.
Nothing is written unless every item is valid; the answer is sent only after the
group commit made the items durable.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from tidings.api import wire
from tidings.api.auth import AuthContext
from tidings.api.cors import check_origin
from tidings.api.errors import error_response
from tidings.api.presenters import present_profile
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.domain.errors import (
    Conflict,
    FieldError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    TidingsError,
    UnsupportedMediaType,
)
from tidings.domain.ids import new_ulid
from tidings.domain.ingest import (
    RESUMABLE,
    AppendRequest,
    EntryKind,
    IdempotencyRecord,
    LogEntry,
    derived_message_id,
    partition_of,
)

__all__ = ["IngestRoutes"]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _now() -> int:
    return time.time_ns() // 1000


class IngestRoutes:
    """Handlers for the write endpoints of ``/api/client``."""

    def __init__(self, services: Services, keys: Any) -> None:
        self.services = services
        self.keys = keys
        self.inflight: set[tuple[int, str]] = set()
        self._partitions = services.log.partitions

    # -- endpoints ------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        return await self._accept(request, "event", wire.validate_event, many=True, what="events")

    async def identify(self, request: Request) -> Response:
        return await self._accept(request, "identify", wire.validate_profile, what="a user")

    async def alias(self, request: Request) -> Response:
        return await self._accept(request, "alias", wire.validate_alias, what="an alias")

    async def devices(self, request: Request) -> Response:
        return await self._accept(request, "device", wire.validate_device, what="a device")

    async def users_patch(self, request: Request) -> Response:
        return await self._accept(
            request,
            "user",
            wire.validate_profile,
            many=True,
            secret=True,
            role=Role.EDITOR,
            what="users",
        )

    async def users_batch(self, request: Request) -> Response:
        return await self._accept(
            request,
            "user",
            wire.validate_profile,
            many=True,
            secret=True,
            role=Role.EDITOR,
            what="users",
            per_item=True,
        )

    # -- the shared path ----------------------------------------------------------------------

    async def _accept(
        self,
        request: Request,
        kind: EntryKind,
        validate: Callable[..., dict[str, Any]],
        *,
        what: str,
        many: bool = False,
        secret: bool = False,
        role: Role | None = None,
        per_item: bool = False,
    ) -> Response:
        held: tuple[int, str] | None = None
        try:
            # One pass over the headers (a Starlette Headers lookup scans them each time).
            headers = dict(reversed(request.scope["headers"]))  # the first of a name wins
            auth = await self.keys.authenticate_header(
                _header(headers, b"authorization") or "", secret=secret, role=role
            )
            if not secret:  # a public-key route: web pages may call it (api/cors.py)
                check_origin(request.scope, auth, _header(headers, b"origin"))
            _check_version(_header(headers, b"spotzee-version"))
            raw = await _read_body(request, headers)
            key = _checked_idempotency_key(_header(headers, b"idempotency-key"))
            project_id = auth.project.id
            request_hash = ""
            replay: Response | IdempotencyRecord | None = None
            if key is not None:
                scope = request.scope
                request_hash = hashlib.sha256(
                    f"{scope['method']} {scope['path']}\n".encode() + raw
                ).hexdigest()
                # Held before the first await: of two requests with one key in this
                # process, the second can only replay a stored answer (or hear 409).
                busy = (project_id, key) in self.inflight
                if not busy:
                    held = (project_id, key)
                    self.inflight.add(held)
                replay = await self._check_idempotency(project_id, key, request_hash, busy)
                if isinstance(replay, IdempotencyRecord) and per_item:
                    return await self._resume_batch(auth, _parse_json(raw), replay)
                if isinstance(replay, Response):
                    return replay
            body = _parse_json(raw)
            return await self._append(
                auth,
                kind,
                validate,
                body,
                len(raw),
                key,
                request_hash,
                what,
                many,
                per_item,
                # A record without an answer whose request died (or could not store the
                # answer, on JetStream): its entries may be in the log or not. Append them
                # again (duplicates are dropped) and store the answer.
                resume=isinstance(replay, IdempotencyRecord),
                nul_possible=wire.nul_possible(raw),
            )
        except TidingsError as error:
            return error_response(request, error)
        finally:
            if held is not None:
                self.inflight.discard(held)

    async def _check_idempotency(
        self, project_id: int, key: str, request_hash: str, busy: bool
    ) -> Response | IdempotencyRecord | None:
        """None: a new request. A response: the replay. The record: a synchronous batch
        whose items are in the log but whose answer is not, because the request that
        appended them gave up waiting (or died): this request computes the answer.
        ``busy``: another request of this process holds the key; only a replay is left."""
        store = self.services.idempotency
        record = await run_in_threadpool(store.get, project_id, key)
        now = _now()
        ttl = self.services.settings.idempotency_ttl_hours * 3_600_000_000
        if record is not None and now - record.created_at > ttl:
            if not busy:
                await run_in_threadpool(store.forget, project_id, key, created_before=now - ttl)
            record = None
        if busy and (record is None or record.status in (None, RESUMABLE)):
            raise _in_progress()
        if record is None:
            return None
        if record.request_hash == request_hash:
            if record.status == RESUMABLE:
                return record
            if record.status is None:
                # Its request may still be waiting, in this or another process, for as
                # long as a synchronous call waits; after that it has given up or died.
                if now - record.created_at < self._in_flight_for():
                    raise _in_progress()
                return record
        return _replay(record, request_hash)

    def _in_flight_for(self) -> int:
        """Microseconds a request may hold a key without an answer: the synchronous wait
        and a margin for the append before it."""
        return int((self.services.settings.sync_timeout + 5.0) * 1_000_000)

    async def _append(
        self,
        auth: AuthContext,
        kind: EntryKind,
        validate: Callable[..., dict[str, Any]],
        body: Any,
        body_size: int,
        key: str | None,
        request_hash: str,
        what: str,
        many: bool,
        per_item: bool,
        *,
        resume: bool = False,
        nul_possible: bool = True,
    ) -> Response:
        project = auth.project
        problems = wire.Problems(nul_possible=nul_possible)
        if per_item:
            return await self._append_per_item(auth, body, key, request_hash, what)
        if many:
            items = wire.validate_items(
                body,
                validate,
                problems,
                default_locale=project.locale,
                what=what,
                body_size=body_size,
            )
        else:
            items = [
                validate(
                    body,
                    "",
                    problems,
                    default_locale=project.locale,
                    check_size=body_size > wire.MAX_EVENT_BYTES,
                )
            ]
        problems.raise_if_any()
        now = _now()
        base = new_ulid()  # items without a message_id get "<base>_<index>": one id per request
        entries = _log_entries(
            project.id, kind, enumerate(items), key, request_hash, base, now, self._partitions
        )
        idempotency = None
        if key is not None:
            idempotency = IdempotencyRecord(
                project_id=project.id,
                key=key,
                request_hash=request_hash,
                created_at=now,
                status=204,
                body=b"",
            )
        outcome = await self.services.committer.append(
            AppendRequest(entries, idempotency, resume=resume)
        )
        if not outcome.appended and key is not None:
            return await self._lost_race(project.id, key, request_hash)
        return Response(status_code=204)

    async def _append_per_item(
        self, auth: AuthContext, body: Any, key: str | None, request_hash: str, what: str
    ) -> Response:
        project = auth.project
        top = wire.Problems()
        if not isinstance(body, list):
            top.add("body", "parameter_invalid_format", f"Expected a JSON array of {what}.")
        elif not body:
            top.add("body", "parameter_invalid_empty", f"Send at least one of {what}.")
        elif len(body) > wire.MAX_ITEMS:
            raise PayloadTooLarge(f"At most {wire.MAX_ITEMS} {what} per request; got {len(body)}.")
        top.raise_if_any()
        now = _now()
        results = _validate_batch(body, project.locale)
        payloads = [
            (i, result["_payload"]) for i, result in enumerate(results) if "_payload" in result
        ]
        entries = _log_entries(
            project.id, "user", payloads, key, request_hash, "", now, self._partitions
        )
        idempotency = None
        if key is not None:
            idempotency = IdempotencyRecord(
                project_id=project.id, key=key, request_hash=request_hash, created_at=now
            )
        outcome = await self.services.committer.append(
            AppendRequest(entries, idempotency, want_positions=True)
        )
        if not outcome.appended and key is not None:
            return await self._lost_race(project.id, key, request_hash)
        done = await self.services.wait_processed(
            outcome.positions, self.services.settings.sync_timeout
        )
        if not done:
            if key is not None:  # a retry may compute the answer from now on
                await run_in_threadpool(self.services.idempotency.give_up, project.id, key)
            raise ServiceUnavailable(
                "The users were accepted but not yet processed; retry with the same "
                "Idempotency-Key to read the results.",
                retry_after=2,
            )
        appended = iter(outcome.positions)
        for result in results:
            if "_payload" in result:
                result["_seq"] = next(appended)[1]
        return await self._finish_batch(project.id, key, results)

    async def _resume_batch(
        self, auth: AuthContext, body: Any, record: IdempotencyRecord
    ) -> Response:
        """Answer a retried batch whose items are already in the log: wait for everything
        appended so far to be applied (that includes them), then read the results. Their
        log positions are not known here, so refused merges are found by the ids they
        tried to link (a refusal of those ids at or after this request's acceptance)."""
        heads = await run_in_threadpool(self.services.log.heads)
        done = await self.services.wait_processed(
            list(heads.items()), self.services.settings.sync_timeout
        )
        if not done:
            raise ServiceUnavailable(
                "The users were accepted but not yet processed; retry with the same "
                "Idempotency-Key to read the results.",
                retry_after=2,
            )
        results = _validate_batch(body, auth.project.locale)
        return await self._finish_batch(
            auth.project.id, record.key, results, refused_since=record.created_at
        )

    async def _finish_batch(
        self,
        project_id: int,
        key: str | None,
        results: list[dict[str, Any]],
        *,
        refused_since: int | None = None,
    ) -> Response:
        response_body = await run_in_threadpool(
            self._batch_results, project_id, results, refused_since
        )
        if key is not None:
            store = self.services.idempotency
            stored = await run_in_threadpool(store.complete, project_id, key, 200, response_body)
            if not stored:  # another request answered first: its answer is the answer
                record = await run_in_threadpool(store.get, project_id, key)
                if record is not None and record.status not in (None, RESUMABLE):
                    return _replay(record, record.request_hash)
        return Response(response_body, status_code=200, media_type="application/json")

    def _batch_results(
        self, project_id: int, results: list[dict[str, Any]], refused_since: int | None
    ) -> bytes:
        profiles = self.services.profiles
        succeeded = 0
        seqs = [r["_seq"] for r in results if "_seq" in r]
        refused = profiles.rejections_at(project_id, seqs) if seqs else {}
        refused_links: dict[tuple[str, str], str] = {}
        if refused_since is not None:
            links = {
                (p["anonymous_id"], p["external_id"])
                for r in results
                if (p := r.get("_payload")) and "anonymous_id" in p and "external_id" in p
            }
            if links:
                refused_links = profiles.link_rejections(project_id, links, refused_since)
        for result in results:
            payload = result.pop("_payload", None)
            seq = result.pop("_seq", None)
            if payload is None:
                continue
            reason = refused.get(seq) or refused_links.get(
                (payload.get("anonymous_id"), payload.get("external_id"))
            )
            if reason is not None:
                result["error"] = {"code": "state_conflict", "message": reason}
                continue
            kind, value = (
                ("external", payload["external_id"])
                if "external_id" in payload
                else ("anonymous", payload["anonymous_id"])
            )
            profile_id = profiles.profile_id_for(project_id, kind, value)
            profile = profiles.get_profile(project_id, profile_id) if profile_id else None
            if profile is None:  # cannot happen once processed; report rather than hide it
                result["error"] = {"code": "internal_error", "message": "Profile not found."}
                continue
            result["user"] = present_profile(profile)
            succeeded += 1
        return _encode(
            {"results": results, "succeeded": succeeded, "failed": len(results) - succeeded}
        )

    async def _lost_race(self, project_id: int, key: str, request_hash: str) -> Response:
        record = await run_in_threadpool(self.services.idempotency.get, project_id, key)
        if record is None:  # pragma: no cover - the winner's row vanished (expired)
            raise ServiceUnavailable("Idempotency record changed concurrently; retry.")
        return _replay(record, request_hash)


def _log_entries(
    project_id: int,
    kind: EntryKind,
    payloads: Iterable[tuple[int, dict[str, Any]]],
    key: str | None,
    request_hash: str,
    base: str,
    now: int,
    partitions: int,
) -> list[LogEntry]:
    """The log entries of a request's items (``(index in the request, payload)``): an
    event without a ``message_id`` gets one derived from the request."""
    entries = []
    for index, payload in payloads:
        if kind == "event" and "message_id" not in payload:
            payload["message_id"] = (
                derived_message_id(key, request_hash, index)
                if key is not None
                else f"{base}_{index}"
            )
        identity = payload.get("external_id") or payload.get("anonymous_id") or ""
        partition = partition_of(project_id, identity, partitions)
        entries.append(LogEntry(project_id, kind, partition, payload, now))
    return entries


def _validate_batch(body: list[Any], default_locale: str | None) -> list[dict[str, Any]]:
    """A result per item: an ``error``, or the validated ``_payload`` to append."""
    results: list[dict[str, Any]] = []
    for index, item in enumerate(body):
        problems = wire.Problems()
        result: dict[str, Any] = {"index": index}
        if isinstance(item, dict):
            for name in ("external_id", "anonymous_id"):
                if isinstance(item.get(name), str):
                    result[name] = item[name]
        try:
            payload = wire.validate_profile(
                item, f"[{index}]", problems, default_locale=default_locale
            )
        except PayloadTooLarge as error:
            result["error"] = {"code": error.code, "message": error.message, "param": error.param}
            results.append(result)
            continue
        if problems:
            result["error"] = problems.as_item_error()
        else:
            result["_payload"] = payload
        results.append(result)
    return results


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed.",
        code="idempotency_in_progress",
    )


def _replay(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        raise Conflict(
            "This Idempotency-Key was used with a different request.",
            code="idempotency_key_mismatch",
        )
    if record.status is None:
        raise _in_progress()
    headers = {"Idempotent-Replayed": "true"}
    if record.status == 204:
        return Response(status_code=204, headers=headers)
    if record.status >= 400:
        # A stored refusal is replayed in the error envelope's own media type, its
        # request_id that of the retry (the envelope's request_id is the X-Request-Id).
        return _ReplayedRefusal(
            record.body or b"",
            status_code=record.status,
            headers=headers,
            media_type="application/problem+json",
        )
    return Response(
        record.body or b"",
        status_code=record.status,
        headers=headers,
        media_type="application/json",
    )


class _ReplayedRefusal(Response):
    """A stored problem answer whose ``request_id`` becomes the retry's own when sent."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        current = scope.get("state", {}).get("request_id")
        if current is not None:
            try:
                problem = msgspec.json.decode(self.body)
            except msgspec.DecodeError:
                problem = None
            if isinstance(problem, dict) and "request_id" in problem:
                problem["request_id"] = current
                self.body = msgspec.json.encode(problem)
                self.raw_headers = [
                    (name, str(len(self.body)).encode() if name == b"content-length" else value)
                    for name, value in self.raw_headers
                ]
        await super().__call__(scope, receive, send)


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _check_version(version: str | None) -> None:
    if version is not None and not _VERSION.match(version.strip()):
        raise InvalidRequest(
            f"Spotzee-Version '{version[:40]}' is not supported; send a date such as 2026-04-28.",
            code="version_unsupported",
            param="Spotzee-Version",
        )


def _idempotency_key(request: Request) -> str | None:
    return _checked_idempotency_key(request.headers.get("idempotency-key"))


def _checked_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.strip():
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 characters.",
            code="idempotency_key_invalid",
            param="Idempotency-Key",
        )
    return key


async def _read_body(request: Request, headers: dict[bytes, bytes]) -> bytes:
    content_type = _header(headers, b"content-type") or ""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not '{content_type[:60] or 'missing'}'.",
            param="Content-Type",
        )
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > wire.MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is larger than {wire.MAX_BODY_BYTES // 1024} KB.")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # straight from the server: no stream wrapper per request
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > wire.MAX_BODY_BYTES:
            raise PayloadTooLarge(f"The body is larger than {wire.MAX_BODY_BYTES // 1024} KB.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidRequest(
            "The body is empty; send JSON.", code="parameter_missing", param="body"
        )
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"The body is not valid JSON: {exc}.",
            param="body",
            errors=[FieldError("body", "parameter_invalid_format", str(exc))],
        ) from None
    except RecursionError:  # the parser's own stack limit, far past ours
        raise wire.too_deep() from None
    return body
