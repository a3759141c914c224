"""The lists API's bodies: reading and checking them, and their OpenAPI description.

The handlers read bodies themselves rather than through FastAPI models, so that the key is
checked first and the answers follow the wire contract: ``parameter_missing``,
``parameter_unknown`` and ``parameter_invalid_*`` as 400; values that are well-formed but
not acceptable (a list type, a rule, an email) as 422 ``validation_failed``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request

from tidings.api import wire
from tidings.domain import limits
from tidings.domain.errors import (
    FieldError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from tidings.domain.membership import IdKind, MemberRow, check_value, read_member_csv
from tidings.domain.rules import parse_rule, rule_to_json

__all__ = [
    "LIST_BODY",
    "MAX_MEMBERS",
    "MAX_TAGS",
    "MEMBERS",
    "MEMBERS_BODY",
    "ONE",
    "READ",
    "WRITE",
    "Responses",
    "check_json",
    "json_object",
    "list_fields",
    "member_rows",
    "openapi_body",
    "problem",
    "read_body",
]

_decode = msgspec.json.Decoder().decode
MAX_MEMBERS = 1000  # identifiers per JSON body; CSV bodies are bounded by the body size
MAX_TAGS = 100
LIST_FIELDS = frozenset({"name", "type", "rule", "tags"})
MEMBER_FIELDS = frozenset({"external_ids", "emails"})
_KINDS: dict[str, IdKind] = {"external_ids": "external_id", "emails": "email"}

# -- documentation of what the handlers read themselves ----------------------------------------


def problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


_TAGS = {
    "type": ["array", "null"],
    "maxItems": MAX_TAGS,
    "items": {"type": "string", "minLength": 1, "maxLength": 255},
}
_RULE = {
    "type": ["object", "null"],
    "description": "A rule tree (dynamic lists only); see docs/segments.md.",
}
LIST_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "type": {"enum": ["static", "dynamic"]},
        "rule": _RULE,
        "tags": _TAGS,
    },
}
_IDS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_MEMBERS,
    "items": {"type": "string", "minLength": 1, "maxLength": 255},
}
MEMBERS_BODY = {
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": [name],
            "properties": {name: _IDS},
        }
        for name in ("external_ids", "emails")
    ]
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def openapi_body(
    schema: dict[str, Any], *, csv: bool = False, idempotent: bool = True
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if csv:
        content["text/csv"] = {
            "schema": {"type": "string", "description": "A header row, then one id a row."}
        }
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if idempotent:
        extra["parameters"] = [_IDEMPOTENCY]
    return extra


Responses = dict[int | str, dict[str, Any]]

READ: Responses = {
    400: problem("A malformed query parameter or cursor"),
    401: problem("Missing, unknown or revoked key, or a public key"),
}
ONE: Responses = {404: problem("No list with this id in the key's project")}
WRITE: Responses = {
    **READ,
    400: problem("A malformed body (every problem listed in errors)"),
    403: problem("The key's role is below editor"),
    409: problem("Idempotency-Key used for another request"),
    413: problem("A body over 1 MB, or too many identifiers"),
    415: problem("Content-Type is not JSON (or CSV where accepted)"),
    422: problem("A value is not acceptable (list type, rule, email)"),
}
MEMBERS: Responses = {
    **WRITE,
    **ONE,
    409: problem("The list is dynamic, or the Idempotency-Key was used for another request"),
    503: problem("Earlier writes for these users are not processed yet; retry"),
}

# -- bodies --------------------------------------------------------------------------------------


async def read_body(request: Request, *, csv: bool = False) -> tuple[bytes, bool]:
    """The raw body and whether it is CSV; JSON (and CSV when ``csv``) only."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    is_csv = media in ("text/csv", "application/csv")
    if not (media == "application/json" or media.endswith("+json") or (csv and is_csv)):
        wanted = "application/json or text/csv" if csv else "application/json"
        raise UnsupportedMediaType(
            f"Content-Type must be {wanted}, not '{content_type[:60] or 'missing'}'.",
            param="Content-Type",
        )
    too_large = PayloadTooLarge(f"The body is larger than {wire.MAX_BODY_BYTES // 1024} KB.")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > wire.MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > wire.MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks), is_csv


def json_object(raw: bytes, *, refuse_nul: bool = False) -> dict[str, Any]:
    """The body's JSON object; nested at most :data:`limits.MAX_BODY_DEPTH` levels, and
    with ``refuse_nul`` no NUL character in a key or string (400 on ``body`` if not)."""
    if not raw:
        raise _body_error("parameter_missing", "The body is empty; send a JSON object.")
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        message = f"The body is not valid JSON: {exc}."
        raise _body_error("parameter_invalid_format", message) from None
    except RecursionError:  # the parser's own stack limit, far past ours
        raise wire.too_deep() from None
    if refuse_nul:
        check_json(raw, body)
    elif wire.may_be_too_deep(raw) and limits.deeper_than(body, limits.MAX_BODY_DEPTH):
        raise wire.too_deep()
    if not isinstance(body, dict):
        raise _body_error("parameter_invalid_format", "The body must be a JSON object.")
    return body


def check_json(raw: bytes, body: Any) -> None:
    """400 on ``body`` when the decoded JSON body ``body`` (of ``raw``) nests deeper than
    :data:`limits.MAX_BODY_DEPTH` levels or holds a NUL character in a key or a string:
    checked before a handler reads a field, so nothing of such a body is stored."""
    if not isinstance(body, dict | list):
        if isinstance(body, str) and "\x00" in body:
            raise _body_error("parameter_invalid_format", "The body has a NUL character.")
        return
    nul = wire.nul_possible(raw)
    if not nul and not wire.may_be_too_deep(raw):
        return
    problem = limits.json_problem(body, max_depth=limits.MAX_BODY_DEPTH, nul_possible=nul)
    if problem is None:
        return
    if "deeper" in problem:
        raise wire.too_deep()
    raise _body_error("parameter_invalid_format", f"The body {problem}.")


def _body_error(code: str, message: str) -> InvalidRequest:
    return InvalidRequest(
        message, code=code, param="body", errors=[FieldError("body", code, message)]
    )


def _unknown(body: dict[str, Any], allowed: frozenset[str], problems: wire.Problems) -> None:
    for name in body:
        if name not in allowed:
            problems.add(
                name, "parameter_unknown", f"Unknown field '{name}'; allowed: {sorted(allowed)}."
            )


def _text(value: Any, param: str, problems: wire.Problems, *, max_length: int = 255) -> str | None:
    if not isinstance(value, str):
        problems.add(param, "parameter_invalid_format", f"'{param}' must be a string.")
    elif not value.strip():
        problems.add(param, "parameter_invalid_empty", f"'{param}' must not be empty.")
    elif len(value) > max_length:
        problems.add(param, "parameter_invalid_format", f"'{param}' is over {max_length} chars.")
    else:
        return value.strip()
    return None


def _tags(value: Any, problems: wire.Problems) -> list[str] | None:
    if not isinstance(value, list):
        problems.add("tags", "parameter_invalid_format", "'tags' must be an array of strings.")
        return None
    if len(value) > MAX_TAGS:
        problems.add("tags", "parameter_invalid_format", f"At most {MAX_TAGS} tags.")
        return None
    tags = [_text(tag, f"tags[{i}]", problems) for i, tag in enumerate(value)]
    return list(dict.fromkeys(t for t in tags if t is not None))


def _checked_rule(raw: Any, kind: str | None, problems: wire.Problems) -> dict[str, Any] | None:
    """The rule to store, in its canonical JSON, or ``None`` after recording its problems:
    not an object is malformed (400); a rule on a static list, or a tree the rule engine
    refuses, is 422."""
    if not isinstance(raw, dict):
        problems.add("rule", "parameter_invalid_format", "'rule' must be a JSON object.")
    elif kind == "static":
        problems.content.append(
            FieldError(
                "rule",
                "parameter_invalid_format",
                "A static list has no rule: add and remove its members instead.",
            )
        )
    elif kind == "dynamic":
        try:
            return rule_to_json(parse_rule(raw, param="rule"))
        except ValidationFailed as exc:
            problems.content.extend(exc.errors)
    return None


def list_fields(body: dict[str, Any], *, current_type: str | None = None) -> dict[str, Any]:
    """The fields given (``null`` counts as absent), checked; raises on any problem.
    ``current_type`` is the type of the list being changed, ``None`` for a new list."""
    creating = current_type is None
    problems = wire.Problems()
    _unknown(body, LIST_FIELDS, problems)
    given: dict[str, Any] = {}
    if body.get("name") is not None:
        given["name"] = _text(body["name"], "name", problems)
    elif creating:
        problems.add("name", "parameter_missing", "'name' is required.")
    kind = body.get("type")
    if kind is None:
        if creating:
            problems.add("type", "parameter_missing", "'type' is required: static or dynamic.")
    elif not isinstance(kind, str):
        problems.add("type", "parameter_invalid_format", "'type' must be a string.")
    elif kind not in ("static", "dynamic"):
        problems.invalid("type", f"'type' must be static or dynamic, not '{kind[:40]}'.")
    elif current_type is not None and kind != current_type:
        problems.invalid("type", "A list's type cannot change: create a new list instead.")
    else:
        given["type"] = kind
    if body.get("tags") is not None:
        given["tags"] = _tags(body["tags"], problems)
    kind = given.get("type", current_type)
    if body.get("rule") is not None:
        given["rule"] = _checked_rule(body["rule"], kind, problems)
    elif creating and kind == "dynamic":
        problems.content.append(
            FieldError("rule", "parameter_missing", "A dynamic list needs a rule.")
        )
    problems.raise_if_any()
    return given


def member_rows(raw: bytes, is_csv: bool) -> tuple[IdKind, list[MemberRow]]:
    """Every identifier of the body, checked. A JSON body with any bad identifier is refused
    whole; a CSV's bad rows are only marked invalid (and reported)."""
    if is_csv:
        parsed = read_member_csv(raw.splitlines(keepends=True))
        return parsed.kind, list(parsed.rows)
    body = json_object(raw)
    problems = wire.Problems()
    _unknown(body, MEMBER_FIELDS, problems)
    named = [name for name in ("external_ids", "emails") if body.get(name) is not None]
    if not named:
        problems.add("external_ids", "parameter_missing", "Send external_ids or emails.")
    elif len(named) > 1:
        problems.add("emails", "parameter_invalid_format", "Send external_ids or emails, not both.")
    problems.raise_if_any()
    name = named[0]
    values = body[name]
    if not isinstance(values, list):
        raise InvalidRequest(f"'{name}' must be an array of strings.", param=name)
    if not values:
        raise InvalidRequest(f"'{name}' is empty.", code="parameter_invalid_empty", param=name)
    if len(values) > MAX_MEMBERS:
        raise PayloadTooLarge(f"At most {MAX_MEMBERS} {name} per request; got {len(values)}.")
    kind = _KINDS[name]
    rows: list[MemberRow] = []
    for index, value in enumerate(values):
        param = f"{name}[{index}]"
        if not isinstance(value, str):
            problems.add(param, "parameter_invalid_format", f"'{param}' must be a string.")
            continue
        checked, error = check_value(kind, value, param)
        if error is None:
            rows.append(MemberRow(index, checked))
        elif error.code == "parameter_invalid_format" and kind == "email":
            problems.content.append(error)
        else:
            problems.structural.append(error)
    problems.raise_if_any()
    return kind, rows
