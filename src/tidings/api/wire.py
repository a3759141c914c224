"""The wire contract of ``/api/client``: validation and normalisation of request items.

Every problem in a request is collected (with a path such as ``[0].user.email``) before
anything is written: structural problems answer 400 with the first one as the ``code``,
problems with a field's content (email, phone, time zone, locale, timestamp) answer 422
``validation_failed``. Both list every problem in ``errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tidings.domain import fields, limits
from tidings.domain.errors import FieldError, InvalidRequest, PayloadTooLarge, ValidationFailed

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_ITEMS",
    "Problems",
    "check_item_size",
    "join_path",
    "may_be_too_deep",
    "nul_possible",
    "object_field",
    "too_deep",
    "validate_alias",
    "validate_device",
    "validate_event",
    "validate_items",
    "validate_profile",
]

MAX_ITEMS = 100
MAX_EVENT_BYTES = limits.MAX_ITEM_BYTES  # any one write item, not only events
MAX_BODY_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 255

_encode = msgspec.json.Encoder().encode

EVENT_FIELDS = frozenset(
    {"name", "anonymous_id", "external_id", "data", "user", "created_at", "message_id"}
)
USER_FIELDS = frozenset({"email", "phone", "timezone", "locale", "data"})
PROFILE_FIELDS = frozenset({"anonymous_id", "external_id"}) | USER_FIELDS
ALIAS_FIELDS = frozenset({"anonymous_id", "external_id"})
DEVICE_FIELDS = frozenset(
    {
        "anonymous_id",
        "external_id",
        "device_id",
        "token",
        "os",
        "os_version",
        "model",
        "app_build",
        "app_version",
        "sdk_version",
    }
)
DEVICE_REQUIRED = ("device_id", "os", "model", "app_build", "app_version")
# The longest value of each device field: the columns' sizes (store/tables.py).
DEVICE_LENGTHS = {"token": 4096, "device_id": 255, "model": 255}
DEVICE_SHORT = 64  # os, os_version, app_build, app_version, sdk_version


class Problems:
    """Collects field errors; ``raise_if_any`` turns them into the right error."""

    def __init__(self, *, nul_possible: bool = True) -> None:
        self.structural: list[FieldError] = []
        self.content: list[FieldError] = []
        # False when the raw body holds no "\u0000" escape (the only way JSON can carry
        # NUL): then no string of it needs the NUL check (see nul_possible()).
        self.nul_possible = nul_possible

    def add(self, param: str, code: str, message: str) -> None:
        self.structural.append(FieldError(param=param, code=code, message=message))

    def invalid(self, param: str, message: str) -> None:
        self.content.append(
            FieldError(param=param, code="parameter_invalid_format", message=message)
        )

    def __bool__(self) -> bool:
        return bool(self.structural or self.content)

    def as_item_error(self) -> dict[str, Any]:
        """The ``error`` of one item in a per-item answer (same 400/422 rule as requests)."""
        errors = self.structural or self.content
        first = errors[0]
        return {
            "code": first.code if self.structural else "validation_failed",
            "message": first.message,
            "param": first.param,
            "errors": [{"param": x.param, "code": x.code, "message": x.message} for x in errors],
        }

    def raise_if_any(self) -> None:
        if self.structural:
            first = self.structural[0]
            raise InvalidRequest(
                first.message,
                code=first.code,
                param=first.param,
                errors=self.structural + self.content,
            )
        if self.content:
            first = self.content[0]
            detail = first.message if len(self.content) == 1 else f"{first.message} (and more)"
            raise ValidationFailed(
                f"Validation failed: {first.param}: {detail}",
                param=first.param,
                errors=self.content,
            )


def join_path(prefix: str, name: str) -> str:
    """``[0]`` + ``user`` → ``[0].user``; a field at the top level is its own name."""
    return f"{prefix}.{name}" if prefix else name


def _check_object(value: Any, path: str, problems: Problems, what: str) -> bool:
    if not isinstance(value, dict):
        problems.add(
            path or "body", "parameter_invalid_format", f"Expected {what} (a JSON object)."
        )
        return False
    return True


def _unknown(item: dict[str, Any], allowed: frozenset[str], path: str, problems: Problems) -> None:
    if item.keys() <= allowed:
        return
    for key in item:
        if key not in allowed:
            problems.add(
                join_path(path, key),
                "parameter_unknown",
                f"Unknown field '{key}'; allowed: {', '.join(sorted(allowed))}.",
            )


def _string(
    item: dict[str, Any],
    name: str,
    path: str,
    problems: Problems,
    *,
    required: bool = False,
    max_length: int = MAX_NAME_LENGTH,
) -> str | None:
    value = item.get(name)
    if value is None:
        if required:
            problems.add(join_path(path, name), "parameter_missing", f"'{name}' is required.")
        return None
    if isinstance(value, str) and len(value) <= max_length and value.strip():
        if name == "external_id":
            problem = limits.external_id_problem(value)
        elif problems.nul_possible:
            problem = limits.text_problem(value)
        else:
            return value  # the common case, without building the field's path
        if problem is None:
            return value
        problems.add(join_path(path, name), "parameter_invalid_format", f"'{name}' {problem}.")
        return None
    param = join_path(path, name)
    if not isinstance(value, str):
        problems.add(param, "parameter_invalid_format", f"'{name}' must be a string.")
    elif not value.strip():
        problems.add(param, "parameter_invalid_empty", f"'{name}' must not be empty.")
    else:
        problems.add(
            param, "parameter_invalid_format", f"'{name}' is longer than {max_length} characters."
        )
    return None


def _ids(item: dict[str, Any], path: str, problems: Problems, out: dict[str, Any]) -> None:
    before = len(problems.structural)
    for name in ("anonymous_id", "external_id"):
        value = _string(item, name, path, problems, max_length=fields.MAX_ID_LENGTH)
        if value is not None:
            out[name] = value
    if (
        len(problems.structural) == before
        and "anonymous_id" not in out
        and "external_id" not in out
    ):
        problems.add(
            join_path(path, "external_id"),
            "parameter_missing",
            "At least one of 'external_id' or 'anonymous_id' is required.",
        )


def object_field(
    item: dict[str, Any], name: str, path: str, problems: Problems
) -> dict[str, Any] | None:
    """The JSON object in ``item[name]``, if any; anything else is a problem."""
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(
            join_path(path, name), "parameter_invalid_format", f"'{name}' must be an object."
        )
        return None
    problem = limits.json_problem(value, nul_possible=problems.nul_possible)
    if problem is not None:
        problems.add(join_path(path, name), "parameter_invalid_format", f"'{name}' {problem}.")
        return None
    return value


def nul_possible(raw: bytes) -> bool:
    """Whether a string of this JSON body may hold NUL: only a ``\\u0000`` escape can
    (a raw control character is invalid JSON); one scan in C."""
    return b"\\u0000" in raw


def may_be_too_deep(raw: bytes) -> bool:
    """False when ``raw`` holds too few brackets to nest past the body's depth limit (two
    fast scans in C, so the usual small body skips the walk)."""
    return raw.count(b"[") + raw.count(b"{") > limits.MAX_BODY_DEPTH


def too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The body is nested too deeply: at most {limits.MAX_DEPTH} levels in 'data', "
        f"traits, 'properties' and 'context' ({limits.MAX_BODY_DEPTH} in the whole body).",
        param="body",
    )


def check_item_size(item: Any, path: str, what: str) -> None:
    """413 when one write item is over :data:`MAX_EVENT_BYTES` as compact JSON."""
    try:
        size = len(_encode(item))
    except RecursionError:  # an ignored field nested past what the encoder's stack allows
        raise too_deep() from None
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLarge(
            f"{what} {path or 'body'} is larger than {MAX_EVENT_BYTES // 1024} KB "
            f"(the limit of one item).",
            param=path or None,
        )


def _traits(
    item: dict[str, Any],
    path: str,
    problems: Problems,
    out: dict[str, Any],
    default_locale: str | None,
) -> None:
    """email, phone, timezone, locale and data, normalised into ``out``."""
    raw: dict[str, str] = {}
    for name in ("email", "phone", "timezone", "locale"):
        value = _string(item, name, path, problems, max_length=320 if name == "email" else 255)
        if value is not None:
            raw[name] = value
    checks: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("email", fields.normalise_email),
        ("timezone", fields.normalise_timezone),
        ("locale", fields.normalise_locale),
        ("phone", lambda v: fields.normalise_phone(v, locales=(raw.get("locale"), default_locale))),
    )
    for name, check in checks:
        if name in raw:
            try:
                out[name] = check(raw[name])
            except ValueError as exc:
                problems.invalid(join_path(path, name), str(exc))
    data = object_field(item, "data", path, problems)
    if data is not None:
        out["data"] = data


def validate_event(
    item: Any,
    path: str,
    problems: Problems,
    *,
    default_locale: str | None,
    check_size: bool = True,
) -> dict[str, Any]:
    """``check_size=False`` when the whole body is under the per-event limit anyway."""
    out: dict[str, Any] = {}
    if not _check_object(item, path, problems, "an event"):
        return out
    _unknown(item, EVENT_FIELDS, path, problems)
    name = _string(item, "name", path, problems, required=True)
    if name is not None:
        out["name"] = name
    _ids(item, path, problems, out)
    data = object_field(item, "data", path, problems)
    if data is not None:
        out["data"] = data
    user = item.get("user")
    if user is not None:
        user_path = join_path(path, "user")
        if _check_object(user, user_path, problems, "'user'"):
            _unknown(user, USER_FIELDS, user_path, problems)
            traits: dict[str, Any] = {}
            _traits(user, user_path, problems, traits, default_locale)
            if traits:
                out["user"] = traits
    created_at = _string(item, "created_at", path, problems, max_length=64)
    if created_at is not None:
        try:
            out["created_at"] = fields.parse_timestamp(created_at)
        except ValueError as exc:
            problems.invalid(join_path(path, "created_at"), str(exc))
    message_id = _string(item, "message_id", path, problems)
    if message_id is not None:
        out["message_id"] = message_id
    if check_size:
        check_item_size(item, path, "Event")
    return out


def validate_profile(
    item: Any,
    path: str,
    problems: Problems,
    *,
    default_locale: str | None,
    check_size: bool = True,
    **_: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not _check_object(item, path, problems, "a user"):
        return out
    _unknown(item, PROFILE_FIELDS, path, problems)
    _ids(item, path, problems, out)
    _traits(item, path, problems, out, default_locale)
    if check_size:
        check_item_size(item, path, "User")
    return out


def validate_alias(
    item: Any, path: str, problems: Problems, *, check_size: bool = True, **_: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not _check_object(item, path, problems, "an alias"):
        return out
    if check_size:
        check_item_size(item, path, "Alias")
    _unknown(item, ALIAS_FIELDS, path, problems)
    for name in ("anonymous_id", "external_id"):
        value = _string(item, name, path, problems, required=True, max_length=fields.MAX_ID_LENGTH)
        if value is not None:
            out[name] = value
    return out


def validate_device(
    item: Any, path: str, problems: Problems, *, check_size: bool = True, **_: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not _check_object(item, path, problems, "a device"):
        return out
    if check_size:
        check_item_size(item, path, "Device")
    _unknown(item, DEVICE_FIELDS, path, problems)
    _ids(item, path, problems, out)
    if item.get("token") == "":  # an app without push permission yet
        item = {**item, "token": None}
    for name in sorted(DEVICE_FIELDS - ALIAS_FIELDS):
        value = _string(
            item,
            name,
            path,
            problems,
            required=name in DEVICE_REQUIRED,
            max_length=DEVICE_LENGTHS.get(name, DEVICE_SHORT),
        )
        if value is not None:
            out[name] = value
    return out


def validate_items(
    body: Any,
    validate: Callable[..., dict[str, Any]],
    problems: Problems,
    *,
    default_locale: str | None,
    what: str,
    body_size: int | None = None,
) -> list[dict[str, Any]]:
    """Validate a JSON array of 1 to 100 items with ``validate``; paths are ``[i].field``."""
    if not isinstance(body, list):
        problems.add("body", "parameter_invalid_format", f"Expected a JSON array of {what}.")
        return []
    if not body:
        problems.add("body", "parameter_invalid_empty", f"Send at least one of {what}.")
        return []
    if len(body) > MAX_ITEMS:
        raise PayloadTooLarge(f"At most {MAX_ITEMS} {what} per request; got {len(body)}.")
    check_size = body_size is None or body_size > MAX_EVENT_BYTES
    return [
        validate(item, f"[{index}]", problems, default_locale=default_locale, check_size=check_size)
        for index, item in enumerate(body)
    ]
