"""Reading and checking the JSON bodies of the messaging API (providers, subscriptions,
campaigns, templates): unknown fields → 400 ``parameter_unknown``, wrong types → 400,
wrong values → 422 ``validation_failed``, each naming the field."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import Request
from fastapi.responses import Response

from tidings.api import lists_wire, wire
from tidings.api.bodies import read_limited
from tidings.api.presenters import iso
from tidings.domain import fields, limits
from tidings.domain.errors import InvalidRequest, NotFound

__all__ = [
    "Body",
    "ignored_body",
    "json_body",
    "json_response",
    "page_answer",
    "request_hash",
    "resource_id",
]

_encode = msgspec.json.Encoder().encode
MAX_ID = 2**31 - 1  # resource ids are 32-bit integers in both databases
_decode = msgspec.json.Decoder().decode


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json")


async def json_body(request: Request) -> tuple[bytes, Any]:
    """The raw body and its JSON value (any JSON: objects and arrays), nested at most
    :data:`limits.MAX_BODY_DEPTH` levels and free of NUL characters (400 if not)."""
    raw, _ = await lists_wire.read_body(request)
    if not raw:
        raise InvalidRequest("The body is empty; send JSON.", code="parameter_missing")
    try:
        value = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:  # the parser's own stack limit, far past ours
        raise wire.too_deep() from None
    lists_wire.check_json(raw, value)
    return raw, value


async def ignored_body(request: Request) -> None:
    """For a route that reads nothing of its body: one sent anyway is still JSON within
    the limits (depth, NUL, size), or 400/413, as on every route; an empty body is fine."""
    raw = await read_limited(request, wire.MAX_BODY_BYTES)
    if not raw.strip():
        return
    try:
        value = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.", param="body") from None
    except RecursionError:
        raise wire.too_deep() from None
    lists_wire.check_json(raw, value)


def request_hash(request: Request, raw: bytes) -> str:
    return hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + raw
    ).hexdigest()


def resource_id(raw: str, what: str) -> int:
    if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_ID:
        raise NotFound(f"No {what} with id '{raw[:40]}'.", param="id")
    return int(raw)


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


# The errors every messaging route may answer (given to each router).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem("A malformed body or parameter (every problem listed in errors)"),
    401: _problem("Missing, unknown or revoked key (or a missing user token)"),
    403: _problem("The key's role is too low"),
    404: _problem("No such resource in the key's project"),
    409: _problem("A state conflict, a duplicate, or an Idempotency-Key conflict"),
    413: _problem("A body over 1 MB"),
    415: _problem("Content-Type is not JSON"),
    422: _problem("A value is not acceptable (every problem listed in errors)"),
    503: _problem("Earlier writes are not processed yet, or the database is unavailable"),
}


def document_bodies(router: Any) -> None:
    """Describe the JSON body the POST and PATCH handlers read themselves (any JSON: the
    handler checks it), so that the OpenAPI document and its fuzzing see it."""
    for route in router.routes:
        methods: set[str] = getattr(route, "methods", None) or set()
        if methods & {"POST", "PATCH", "PUT"}:
            extra = dict(route.openapi_extra or {})
            extra.setdefault(
                "requestBody",
                {"required": True, "content": {"application/json": {"schema": {}}}},
            )
            route.openapi_extra = extra


def page_answer(page: Any, present: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    return json_response(
        {
            "results": [present(r) for r in page.results],
            "nextCursor": page.next_cursor,
            "prevCursor": page.prev_cursor,
            "limit": page.limit,
        }
    )


_MISSING = object()


class Body:
    """Typed reads of one JSON object's fields, collecting problems."""

    def __init__(self, value: Any, allowed: frozenset[str], *, path: str = "") -> None:
        self.problems = wire.Problems()
        self.path = path
        if not isinstance(value, dict):
            self.problems.add(path or "body", "parameter_invalid_format", "Must be a JSON object.")
            value = {}
        self.value: dict[str, Any] = value
        for key in value:
            if key not in allowed:
                self.problems.add(self._p(key), "parameter_unknown", f"Unknown field '{key}'.")

    def _p(self, name: str) -> str:
        return wire.join_path(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.value

    def _get(self, name: str, required: bool) -> Any:
        value = self.value.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.problems.add(self._p(name), "parameter_missing", f"'{name}' is required.")
            return _MISSING
        return value

    def string(
        self, name: str, *, required: bool = False, max_length: int = 255, choices: Any = None
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.problems.add(self._p(name), "parameter_invalid_format", "Must be a string.")
            return None
        if not value.strip():
            self.problems.add(self._p(name), "parameter_invalid_empty", "Must not be empty.")
            return None
        if len(value) > max_length:
            self.problems.invalid(self._p(name), f"At most {max_length} characters.")
            return None
        if choices is not None and value not in choices:
            self.problems.invalid(self._p(name), f"One of: {', '.join(choices)}.")
            return None
        return value

    def integer(
        self, name: str, *, required: bool = False, minimum: int = 0, maximum: int = 2**31 - 1
    ) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.add(self._p(name), "parameter_invalid_format", "Must be an integer.")
            return None
        if not minimum <= value <= maximum:
            self.problems.invalid(self._p(name), f"Must be between {minimum} and {maximum}.")
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.problems.add(self._p(name), "parameter_invalid_format", "Must be true or false.")
            return None
        return value

    def obj(
        self, name: str, *, required: bool = False, max_depth: int = limits.MAX_DEPTH
    ) -> dict[str, Any] | None:
        """The free-form object in ``name``: nested at most ``max_depth`` levels (the
        object itself is level 1), without NUL characters."""
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.problems.add(self._p(name), "parameter_invalid_format", "Must be an object.")
            return None
        problem = limits.json_problem(value, max_depth=max_depth)
        if problem is not None:
            if "deeper" in problem and max_depth > limits.MAX_DEPTH:
                problem += f" (a 'data' in it: {limits.MAX_DEPTH})"
            self.problems.add(self._p(name), "parameter_invalid_format", f"'{name}' {problem}.")
            return None
        return value

    def ids(self, name: str, *, max_items: int = 100) -> list[int] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_ID for v in value
        ):
            self.problems.add(
                self._p(name), "parameter_invalid_format", "Must be a list of positive ids."
            )
            return None
        if len(value) > max_items:
            self.problems.invalid(self._p(name), f"At most {max_items} ids.")
            return None
        return list(dict.fromkeys(value))

    def tags(self, name: str = "tags") -> list[str] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, str) and 0 < len(v) <= 255 for v in value
        ):
            self.problems.add(
                self._p(name), "parameter_invalid_format", "Must be a list of strings."
            )
            return None
        return value[:100]

    def time(self, name: str) -> int | None:
        value = self.string(name, max_length=64)
        if value is None:
            return None
        try:
            return fields.parse_timestamp(value)
        except ValueError as exc:
            self.problems.invalid(self._p(name), str(exc))
            return None

    def done(self) -> None:
        self.problems.raise_if_any()


def present_time(micros: int | None) -> str | None:
    return iso(micros)
