"""Segment-spec ingest (``/v1``): the tracking API that Segment and RudderStack SDKs call.

Each message is mapped onto a log entry of an existing kind (``event``, ``identify`` or
``alias``) and goes through the same ingest log, group commit and pipeline as
``/api/client``. The answer (``200 {"success": true}``) is sent only after the commit.

Order of checks: write key from the ``Authorization`` header (when sent) → ``outcomes``
query parameter → ``Content-Type`` → ``Content-Encoding`` → body size (compressed and
inflated) → JSON → write key from the body (when no header) → every message.

See docs/segment-compat.md for the mapping and the decisions behind it.
"""

from __future__ import annotations

import base64
import binascii
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tidings.api import wire
from tidings.api.auth import AuthContext
from tidings.api.cors import check_origin
from tidings.api.errors import error_response
from tidings.api.segment_wire import (
    GROUP_TRAIT_PREFIX,
    MAX_MESSAGE_BYTES,
    PAGE_EVENT,
    SCREEN_EVENT,
    Mapped,
    Shared,
    batch_of,
    map_message,
    sent_message_id,
    too_large,
    too_large_message,
)
from tidings.bootstrap import Services
from tidings.domain import limits
from tidings.domain.auth import authorize
from tidings.domain.errors import (
    AuthenticationRequired,
    InvalidRequest,
    PayloadTooLarge,
    TidingsError,
    UnsupportedMediaType,
)
from tidings.domain.ids import new_ulid
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of

__all__ = [
    "GROUP_TRAIT_PREFIX",
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "PAGE_EVENT",
    "ROUTES",
    "SCREEN_EVENT",
    "SegmentRoutes",
]

MAX_BATCH_BYTES = 500 * 1024  # one request body, before and after inflating

# Path → message type (None: a batch). analytics.js posts to one-letter paths.
ROUTES: dict[str, str | None] = {
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/alias": "alias",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/batch": None,
    "/v1/import": None,
    "/v1/t": "track",
    "/v1/i": "identify",
    "/v1/a": "alias",
    "/v1/p": "page",
    "/v1/s": "screen",
    "/v1/g": "group",
    "/v1/b": None,
}

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_SUCCESS = b'{"success":true}'
_TEXT_TYPES = ("text/plain",)  # analytics.js sends text/plain to avoid a CORS preflight
_KEY_HELP = "Send the write key as the HTTP Basic username (empty password) or as writeKey."


def _now() -> int:
    return time.time_ns() // 1000


class SegmentRoutes:
    """Handlers for ``POST /v1/<type>`` and ``/v1/batch``; see :data:`ROUTES`."""

    def __init__(self, services: Services, keys: Any) -> None:
        self.services = services
        self.keys = keys

    def endpoints(self) -> dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]:
        """The ``fast_routes`` entries of every ``/v1`` path."""
        return {("POST", path): self._endpoint(kind) for path, kind in ROUTES.items()}

    def _endpoint(self, kind: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self.handle(request, kind)

        return endpoint

    async def handle(self, request: Request, kind: str | None) -> Response:
        try:
            return await self._handle(request, kind)
        except TidingsError as error:
            return error_response(request, error)

    async def _handle(self, request: Request, kind: str | None) -> Response:
        header_key = _header_key(request)
        origin = request.headers.get("origin")
        auth = None
        if header_key is not None:
            auth = await self._authenticate(header_key)
            check_origin(request.scope, auth, origin)
        per_item = _outcomes_requested(request)
        raw = await _read_body(request)
        body = _parse_json(raw)
        if not isinstance(body, dict):
            raise InvalidRequest("Expected a JSON object.", param="body")
        if auth is None:
            auth = await self._authenticate(_body_key(body))
            check_origin(request.scope, auth, origin)
        project = auth.project
        nul = wire.nul_possible(raw)
        top = wire.Problems(nul_possible=nul)
        shared = Shared(
            default_locale=project.locale,
            received_at=_now(),
            sent_at=None,
            context=None,
            base_id=new_ulid(),
        )
        if kind is None:
            messages = batch_of(body, top, shared)
            prefix = "batch"
        else:
            messages = [body]
            prefix = ""
        top.raise_if_any()
        check_size = len(raw) > MAX_MESSAGE_BYTES  # else no message can be over the limit
        if per_item:
            return await self._per_item(auth, messages, kind, prefix, shared, check_size, nul)
        problems = wire.Problems(nul_possible=nul)
        mapped: list[Mapped] = []
        for index, message in enumerate(messages):
            path = f"{prefix}[{index}]" if prefix else ""
            if check_size and too_large(message):
                raise PayloadTooLarge(too_large_message(path), param=path or None)
            result = map_message(message, kind, path, index, problems, shared)
            if result is not None:
                mapped.append(result)
        problems.raise_if_any()
        await self._append(project.id, mapped, shared.received_at)
        return Response(_SUCCESS, status_code=200, media_type="application/json")

    async def _per_item(
        self,
        auth: AuthContext,
        messages: list[Any],
        kind: str | None,
        prefix: str,
        shared: Shared,
        check_size: bool,
        nul_possible: bool,
    ) -> Response:
        results: list[dict[str, Any]] = []
        mapped: list[Mapped] = []
        for index, message in enumerate(messages):
            path = f"{prefix}[{index}]" if prefix else ""
            result: dict[str, Any] = {"index": index, "messageId": sent_message_id(message)}
            results.append(result)
            if check_size and too_large(message):
                result["error"] = {
                    "code": "payload_too_large",
                    "message": too_large_message(path),
                    "param": path or "body",
                }
                continue
            problems = wire.Problems(nul_possible=nul_possible)
            item = map_message(message, kind, path, index, problems, shared)
            if problems or item is None:
                result["error"] = problems.as_item_error()
                continue
            if item.kind == "event":  # the generated id, when none was sent
                result["messageId"] = item.payload["message_id"]
            result["accepted"] = True
            mapped.append(item)
        await self._append(auth.project.id, mapped, shared.received_at)
        accepted = len(mapped)
        body = {"results": results, "accepted": accepted, "rejected": len(results) - accepted}
        return Response(_encode(body), status_code=200, media_type="application/json")

    async def _append(self, project_id: int, mapped: list[Mapped], now: int) -> None:
        if not mapped:
            return
        partitions = self.services.log.partitions
        entries = [
            LogEntry(
                project_id=project_id,
                kind=item.kind,
                partition=partition_of(
                    project_id,
                    item.payload.get("external_id") or item.payload.get("anonymous_id") or "",
                    partitions,
                ),
                payload=item.payload,
                accepted_at=now,
            )
            for item in mapped
        ]
        await self.services.committer.append(AppendRequest(entries))

    async def _authenticate(self, token: str | None) -> AuthContext:
        if not token:
            raise AuthenticationRequired(f"A write key is required. {_KEY_HELP}")
        context: AuthContext | None = await self.keys.lookup(token)
        try:
            authorize(context.key if context else None, secret=False)
        except AuthenticationRequired:
            raise AuthenticationRequired(
                f"The write key is unknown or revoked. {_KEY_HELP}"
            ) from None
        assert context is not None
        return context


# -- request level ------------------------------------------------------------------------


def _header_key(request: Request) -> str | None:
    """The key from ``Authorization: Basic base64(key:)`` (or ``Bearer key``); None when
    the header is absent, so that the body's ``writeKey`` is used."""
    header = request.headers.get("authorization")
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationRequired(
                f"The Authorization header is not valid Basic credentials. {_KEY_HELP}"
            ) from None
        username = decoded.partition(":")[0].strip()
        if username:
            return username
    raise AuthenticationRequired(f"The Authorization header holds no write key. {_KEY_HELP}")


def _body_key(body: dict[str, Any]) -> str | None:
    key = body.get("writeKey")
    return key.strip() if isinstance(key, str) else None


def _outcomes_requested(request: Request) -> bool:
    value = request.query_params.get("outcomes")
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise InvalidRequest(
        f"outcomes must be 1 or 0, not '{value[:40]}'.",
        param="outcomes",
    )


async def _read_body(request: Request) -> bytes:
    """The body, inflated; 413 past :data:`MAX_BATCH_BYTES` before or after inflating."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    json_like = media == "application/json" or media.endswith("+json")
    if media and not json_like and media not in _TEXT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not '{content_type[:60]}'.",
            param="Content-Type",
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{encoding[:40]}' is not supported; send gzip, deflate or none.",
            param="Content-Encoding",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BATCH_BYTES:
        raise PayloadTooLarge(_body_too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise PayloadTooLarge(_body_too_large())
        chunks.append(chunk)
    raw = b"".join(chunks)
    formats: tuple[int, ...]
    if encoding in ("gzip", "x-gzip"):
        formats, name = (16 + zlib.MAX_WBITS,), "gzip"
    elif encoding == "deflate":
        # RFC 9110 deflate is a zlib stream; some clients send raw deflate instead.
        formats, name = (zlib.MAX_WBITS, -zlib.MAX_WBITS), "deflate"
    else:
        return raw
    if len(raw) <= _INLINE_INFLATE:
        return _inflate(raw, formats, MAX_BATCH_BYTES, name)
    # Inflating up to 500 KB takes milliseconds: not on the event loop.
    return await run_in_threadpool(_inflate, raw, formats, MAX_BATCH_BYTES, name)


def _inflate(raw: bytes, formats: tuple[int, ...], limit: int, name: str) -> bytes:
    for wbits in formats:
        try:
            return _inflate_as(raw, wbits, limit)
        except zlib.error:
            continue
    raise InvalidRequest(f"The body is not valid {name} data.", param="Content-Encoding")


_FEED = 64 * 1024  # compressed bytes given to zlib at a time
_INLINE_INFLATE = 8 * 1024  # smaller compressed bodies inflate on the event loop


def _inflate_as(raw: bytes, wbits: int, limit: int) -> bytes:
    """Inflate ``raw``, never producing more than ``limit`` + 1 bytes: a small body that
    inflates to gigabytes stops at the limit (413) instead of filling memory. Several
    gzip members in a row are read one after another, as ``gzip -d`` does, up to
    ``limits.MAX_GZIP_MEMBERS`` of them.

    Linear in ``raw``: zlib is fed slices of a memoryview, so what a member leaves
    unused is at most one slice (``unused_data`` of the whole rest of the body, once per
    member, made thousands of tiny members cost time quadratic in their number).
    """
    view = memoryview(raw)
    out: list[bytes] = []
    size = 0
    offset = 0
    members = 0
    while True:
        members += 1
        if members > limits.MAX_GZIP_MEMBERS:
            raise InvalidRequest(
                f"The gzip body has more than {limits.MAX_GZIP_MEMBERS} members.",
                param="Content-Encoding",
            )
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if offset >= len(view):
                raise zlib.error("truncated stream")
            piece = view[offset : offset + _FEED]
            offset += len(piece)
            chunk = inflater.decompress(piece, limit + 1 - size)
            while True:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(_body_too_large(inflated=True))
                out.append(chunk)
                if inflater.eof or not inflater.unconsumed_tail:
                    break
                chunk = inflater.decompress(inflater.unconsumed_tail, limit + 1 - size)
        offset -= len(inflater.unused_data)  # the next member starts there
        if _only_zeros(view[offset:]):  # gzip writers may pad with zeros
            return b"".join(out)
        if wbits <= zlib.MAX_WBITS:  # zlib and raw deflate have one stream
            raise zlib.error("data after the end of the stream")


def _only_zeros(rest: memoryview) -> bool:
    if bytes(rest[:_FEED]).strip(b"\x00"):  # the usual case: the next member's header
        return False
    return rest.tobytes().count(0) == len(rest)


def _body_too_large(*, inflated: bool = False) -> str:
    what = "inflated body" if inflated else "body"
    return f"The {what} is larger than {MAX_BATCH_BYTES // 1024} KB."


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidRequest(
            "The body is empty; send JSON.", code="parameter_missing", param="body"
        )
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.", param="body") from None
    except RecursionError:  # the parser's own stack limit, far past ours
        raise wire.too_deep() from None
    return body
