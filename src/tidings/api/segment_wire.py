"""Segment-spec messages → Tidings log entries: validation and mapping, no I/O.

Each message becomes an entry of an existing kind (``event``, ``identify``, ``alias``);
every problem is collected with its path (``batch[3].traits.email``) before anything is
written. See docs/segment-compat.md for the mapping and the decisions behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from tidings.api import wire
from tidings.domain import fields, limits
from tidings.domain.ingest import EntryKind

__all__ = [
    "GROUP_TRAIT_PREFIX",
    "MAX_MESSAGE_BYTES",
    "PAGE_EVENT",
    "SCREEN_EVENT",
    "TYPES",
    "Mapped",
    "Shared",
    "batch_of",
    "map_message",
    "sent_message_id",
    "too_large",
    "too_large_message",
]

MAX_MESSAGE_BYTES = 32 * 1024  # one message, re-encoded as compact JSON
PAGE_EVENT = "Page viewed"
SCREEN_EVENT = "Screen viewed"
GROUP_TRAIT_PREFIX = "group_"
TYPES = ("track", "identify", "alias", "page", "screen", "group")
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Shared:
    """What every message of one request shares."""

    default_locale: str | None
    received_at: int
    sent_at: int | None  # the batch's sentAt, which wins over a message's own
    context: dict[str, Any] | None  # the batch's context, merged under each message's
    base_id: str  # generated message ids are "<base_id>_<index>"


@dataclass(slots=True)
class Mapped:
    kind: EntryKind
    payload: dict[str, Any]


def batch_of(body: dict[str, Any], problems: wire.Problems, shared: Shared) -> list[Any]:
    shared.sent_at = _timestamp(body, "sentAt", "", problems)
    shared.context = wire.object_field(body, "context", "", problems)
    batch = body.get("batch")
    if batch is None:
        problems.add("batch", "parameter_missing", "'batch' (an array of messages) is required.")
        return []
    if not isinstance(batch, list):
        problems.add("batch", "parameter_invalid_format", "'batch' must be an array of messages.")
        return []
    if not batch:
        problems.add("batch", "parameter_invalid_empty", "Send at least one message in 'batch'.")
    return batch


def too_large(message: Any) -> bool:
    try:
        return len(_encode(message)) > MAX_MESSAGE_BYTES
    except RecursionError:  # an ignored field nested past what the encoder's stack allows
        raise wire.too_deep() from None


def too_large_message(path: str) -> str:
    return f"Message {path or 'body'} is larger than {MAX_MESSAGE_BYTES // 1024} KB."


def sent_message_id(message: Any) -> str | None:
    value = message.get("messageId") if isinstance(message, dict) else None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_id(value)
    return None


# -- one message -------------------------------------------------------------------------


def _number_id(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _id(
    message: dict[str, Any],
    name: str,
    path: str,
    problems: wire.Problems,
    *,
    required: bool = False,
    empty_is_absent: bool = False,
) -> str | None:
    """A string id; numbers become strings (Segment allows a numeric userId)."""
    value = message.get(name)
    param = wire.join_path(path, name)
    if value is None or (empty_is_absent and value == ""):
        if required:
            problems.add(param, "parameter_missing", f"'{name}' is required.")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = _number_id(value)
    if not isinstance(value, str):
        problems.add(param, "parameter_invalid_format", f"'{name}' must be a string or a number.")
        return None
    if not value.strip():
        problems.add(param, "parameter_invalid_empty", f"'{name}' must not be empty.")
        return None
    if len(value) > fields.MAX_ID_LENGTH:
        problems.add(
            param,
            "parameter_invalid_format",
            f"'{name}' is longer than {fields.MAX_ID_LENGTH} characters.",
        )
        return None
    problem = limits.external_id_problem(value) if name == "userId" else limits.text_problem(value)
    if problem is not None:
        problems.add(param, "parameter_invalid_format", f"'{name}' {problem}.")
        return None
    return value


def _text(
    message: dict[str, Any],
    name: str,
    path: str,
    problems: wire.Problems,
    *,
    required: bool = False,
    max_length: int | None = None,
) -> str | None:
    value = message.get(name)
    param = wire.join_path(path, name)
    if value is None or (value == "" and not required):
        if required:
            problems.add(param, "parameter_missing", f"'{name}' is required.")
        return None
    if not isinstance(value, str):
        problems.add(param, "parameter_invalid_format", f"'{name}' must be a string.")
        return None
    if required and not value.strip():
        problems.add(param, "parameter_invalid_empty", f"'{name}' must not be empty.")
        return None
    if max_length is not None and len(value) > max_length:
        problems.add(
            param, "parameter_invalid_format", f"'{name}' is longer than {max_length} characters."
        )
        return None
    problem = limits.text_problem(value)
    if problem is not None:
        problems.add(param, "parameter_invalid_format", f"'{name}' {problem}.")
        return None
    return value


def _timestamp(
    message: dict[str, Any], name: str, path: str, problems: wire.Problems
) -> int | None:
    value = message.get(name)
    if value is None:
        return None
    param = wire.join_path(path, name)
    if not isinstance(value, str) or len(value) > 64:
        problems.add(
            param, "parameter_invalid_format", f"'{name}' must be an ISO-8601 timestamp string."
        )
        return None
    try:
        return fields.parse_timestamp(value)
    except ValueError as exc:
        problems.invalid(param, str(exc))
        return None


def map_message(
    message: Any,
    endpoint_type: str | None,
    path: str,
    index: int,
    problems: wire.Problems,
    shared: Shared,
) -> Mapped | None:
    """The log entry of one Segment message; problems are added to ``problems``."""
    if not isinstance(message, dict):
        problems.add(path or "body", "parameter_invalid_format", "Expected a message (an object).")
        return None
    kind = _type_of(message, endpoint_type, path, problems)
    if kind is None:
        return None
    message_id = _id(message, "messageId", path, problems)
    context = wire.object_field(message, "context", path, problems)
    if shared.context:
        context = {**shared.context, **(context or {})}
    if kind == "alias":
        return _alias(message, path, problems)
    ids = _ids(message, path, problems)
    if kind == "identify":
        return _identify(message, path, problems, ids, context, shared)
    if kind == "group":
        return _group(message, path, problems, ids)
    return _event(message, kind, path, problems, ids, context, message_id, index, shared)


def _type_of(
    message: dict[str, Any], endpoint_type: str | None, path: str, problems: wire.Problems
) -> str | None:
    sent = message.get("type")
    param = wire.join_path(path, "type")
    if endpoint_type is not None:
        if sent is not None and sent != endpoint_type:
            problems.add(
                param,
                "parameter_invalid_format",
                f"'type' is {str(sent)[:40]!r} but this endpoint takes {endpoint_type!r}.",
            )
            return None
        return endpoint_type
    if sent is None:
        problems.add(param, "parameter_missing", f"'type' is required: one of {', '.join(TYPES)}.")
        return None
    if sent not in TYPES:
        problems.add(
            param,
            "parameter_invalid_format",
            f"'type' {str(sent)[:40]!r} is not one of {', '.join(TYPES)}.",
        )
        return None
    return str(sent)


def _ids(message: dict[str, Any], path: str, problems: wire.Problems) -> dict[str, str]:
    before = len(problems.structural)
    out: dict[str, str] = {}
    # An empty string is no id: RudderStack's JavaScript SDK sends "userId": "" until
    # identify (the other id is still required).
    user_id = _id(message, "userId", path, problems, empty_is_absent=True)
    anonymous_id = _id(message, "anonymousId", path, problems, empty_is_absent=True)
    if user_id is not None:
        out["external_id"] = user_id
    if anonymous_id is not None:
        out["anonymous_id"] = anonymous_id
    if not out and len(problems.structural) == before:
        problems.add(
            wire.join_path(path, "userId"),
            "parameter_missing",
            "At least one of 'userId' or 'anonymousId' is required.",
        )
    return out


def _client_time(message: dict[str, Any], path: str, problems: wire.Problems) -> int | None:
    original = _timestamp(message, "originalTimestamp", path, problems)
    timestamp = _timestamp(message, "timestamp", path, problems)
    return original if original is not None else timestamp


def _event(
    message: dict[str, Any],
    kind: str,
    path: str,
    problems: wire.Problems,
    ids: dict[str, str],
    context: dict[str, Any] | None,
    message_id: str | None,
    index: int,
    shared: Shared,
) -> Mapped | None:
    properties = wire.object_field(message, "properties", path, problems)
    data = dict(properties or {})
    if kind == "track":
        name = _text(message, "event", path, problems, required=True, max_length=255)
    else:
        name = PAGE_EVENT if kind == "page" else SCREEN_EVENT
        for extra in ("name", "category"):
            value = _text(message, extra, path, problems)
            if value is not None:
                data[extra] = value
    client_time = _client_time(message, path, problems)
    own_sent_at = _timestamp(message, "sentAt", path, problems)
    sent_at = shared.sent_at if shared.sent_at is not None else own_sent_at
    if name is None:
        return None
    created_at = shared.received_at
    if client_time is not None:
        created_at = client_time
        if sent_at is not None:  # clock-skew correction
            corrected = shared.received_at - (sent_at - client_time)
            # Absurd sentAt values would leave the accepted range: keep the client's time.
            if limits.MIN_TIMESTAMP <= corrected <= limits.MAX_TIMESTAMP:
                created_at = corrected
    payload: dict[str, Any] = {"name": name, **ids}
    if data:
        payload["data"] = data
    payload["message_id"] = message_id or f"{shared.base_id}_{index}"
    payload["created_at"] = created_at
    if context:
        payload["context"] = context
    return Mapped("event", payload)


def _identify(
    message: dict[str, Any],
    path: str,
    problems: wire.Problems,
    ids: dict[str, str],
    context: dict[str, Any] | None,
    shared: Shared,
) -> Mapped | None:
    """Traits come from ``traits`` and ``context.traits`` (RudderStack's SDKs send
    identify's traits only there); a top-level trait wins over a context trait of the
    same name."""
    top = wire.object_field(message, "traits", path, problems) or {}
    _client_time(message, path, problems)  # validated, not used: traits apply in log order
    nested = (context or {}).get("traits")
    traits = {**(nested if isinstance(nested, dict) else {}), **top}
    payload: dict[str, Any] = dict(ids)
    locale = _context_value(context, "locale", fields.normalise_locale)
    if locale is not None:
        payload["locale"] = locale
    timezone = _context_value(context, "timezone", fields.normalise_timezone)
    if timezone is not None:
        payload["timezone"] = timezone

    def where(name: str) -> str:  # the path of a trait, wherever it came from
        return wire.join_path(path, "traits" if name in top else "context.traits")

    email = _text(traits, "email", where("email"), problems, max_length=320)
    if email is not None:
        try:
            payload["email"] = fields.normalise_email(email)
        except ValueError as exc:
            problems.invalid(wire.join_path(where("email"), "email"), str(exc))
    phone = _text(traits, "phone", where("phone"), problems, max_length=255)
    if phone is not None:
        try:
            payload["phone"] = fields.normalise_phone(
                phone, locales=(locale, shared.default_locale)
            )
        except ValueError as exc:
            problems.invalid(wire.join_path(where("phone"), "phone"), str(exc))
    data = {key: value for key, value in traits.items() if key not in ("email", "phone")}
    if data:
        payload["data"] = data
    return Mapped("identify", payload) if ids else None


def _context_value(
    context: dict[str, Any] | None, name: str, normalise: Callable[[str], str]
) -> str | None:
    """``context.locale`` / ``context.timezone``: device metadata the SDKs collect on their
    own, so a value Tidings cannot read is left out rather than refusing the message."""
    value = (context or {}).get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return normalise(value)
    except ValueError:
        return None


def _group(
    message: dict[str, Any], path: str, problems: wire.Problems, ids: dict[str, str]
) -> Mapped | None:
    """The group's traits are the top-level ``traits`` (where every RudderStack SDK sends
    them too); ``context.traits`` there are the user's cached traits, which a group call
    does not apply, as a track does not (docs/segment-compat.md)."""
    group_id = _id(message, "groupId", path, problems, required=True)
    traits = wire.object_field(message, "traits", path, problems)
    # Stored one level down (under "group_<id>"): the profile's data stays within the limit.
    if traits is not None and limits.deeper_than(traits, limits.MAX_DEPTH - 1):
        problems.add(
            wire.join_path(path, "traits"),
            "parameter_invalid_format",
            f"'traits' is nested deeper than {limits.MAX_DEPTH - 1} levels (a group's traits "
            "are stored one level down in the profile's data).",
        )
        return None
    _client_time(message, path, problems)
    if group_id is None or not ids:
        return None
    return Mapped("identify", {**ids, "data": {GROUP_TRAIT_PREFIX + group_id: traits or {}}})


def _alias(message: dict[str, Any], path: str, problems: wire.Problems) -> Mapped | None:
    previous_id = _id(message, "previousId", path, problems, required=True)
    user_id = _id(message, "userId", path, problems, required=True)
    _client_time(message, path, problems)
    if previous_id is None or user_id is None:
        return None
    return Mapped("alias", {"anonymous_id": previous_id, "external_id": user_id})
