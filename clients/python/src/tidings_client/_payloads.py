"""Request bodies: argument checks, key conversion and JSON encoding.

Pure functions for the calls of ``_calls``, shared by every client, so a sync, async or
batched call sends the very same bytes for the same arguments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ._keys import convert_keys

__all__ = [
    "MAX_ITEMS",
    "compact",
    "dumps",
    "id_value",
    "mapping",
    "new_message_id",
    "timestamp",
    "trigger_body",
    "user_ids",
    "users_body",
]

MAX_ITEMS = 100
"""Most items the server accepts in one array body."""

_USER_FIELDS = ("anonymous_id", "external_id", "email", "phone", "timezone", "locale", "data")


def new_message_id() -> str:
    """A fresh, random event id (uuid4 as 32 hex digits)."""
    return uuid.uuid4().hex


def id_value(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if name.endswith("external_id"):
        _check_external_id(name, value)
    return value or None


def _check_external_id(name: str, value: str) -> None:
    """The server's rule: an external id names the user in URLs (``/users/{id}``), so it
    holds no ``/`` and is not ``.`` or ``..`` (it could be written but never read)."""
    if "/" in value:
        raise ValueError(f"{name} must not contain '/' (it names the user in URLs): {value!r}")
    if value in (".", ".."):
        raise ValueError(f"{name} must not be '.' or '..' (it names the user in URLs)")


def user_ids(
    call: str, external_id: str | None, anonymous_id: str | None
) -> tuple[str | None, str | None]:
    """The checked ids of a call about one user; at least one of them is needed."""
    ext, anon = id_value("external_id", external_id), id_value("anonymous_id", anonymous_id)
    if ext is None and anon is None:
        raise ValueError(f"{call}() needs an external_id or an anonymous_id (or both)")
    return ext, anon


def timestamp(value: dt.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dt.datetime):
        raise TypeError(f"created_at must be a datetime or an ISO-8601 str, not {type(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive datetime is local time to some and UTC to others: refuse to guess.
        raise ValueError("created_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.isoformat()


def mapping(name: str, value: Mapping[str, Any] | None, convert: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, not {type(value).__name__}")
    return convert_keys(value) if convert else dict(value)


def compact(body: dict[str, Any]) -> dict[str, Any]:
    """Leave out absent fields rather than sending nulls."""
    return {k: v for k, v in body.items() if v is not None}


def users_body(users: Sequence[Mapping[str, Any]], *, convert: bool) -> list[dict[str, Any]]:
    """The array of ``POST /users/batch``: 1-100 profiles, each with an id."""
    if isinstance(users, Mapping | str | bytes):
        raise TypeError("upsert_users() takes a list of user mappings")
    items = [mapping(f"users[{i}]", u, convert) or {} for i, u in enumerate(users)]
    if not 1 <= len(items) <= MAX_ITEMS:
        raise ValueError(f"upsert_users() takes 1 to {MAX_ITEMS} users, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        ext = id_value(f"users[{i}].external_id", item.get("external_id"))
        anon = id_value(f"users[{i}].anonymous_id", item.get("anonymous_id"))
        if ext is None and anon is None:
            raise ValueError(f"upsert_users(): users[{i}] needs an external_id or anonymous_id")
        item.update(external_id=ext, anonymous_id=anon)
        out.append(compact(item))
    return out


def trigger_body(
    external_id: str,
    email: str | None,
    phone: str | None,
    timezone: str | None,
    locale: str | None,
    traits: Mapping[str, Any] | None,
    event: Mapping[str, Any] | None,
    convert: bool,
    /,
) -> dict[str, Any]:
    """The body of ``POST /campaigns/{id}/trigger`` and ``/journeys/{id}/trigger``; the
    arguments in the order of the two calls' parameters."""
    ext = id_value("external_id", external_id)
    if ext is None:
        raise ValueError("trigger_campaign()/trigger_journey() need an external_id")
    user = compact(
        {
            "external_id": ext,
            "email": email,
            "phone": phone,
            "timezone": timezone,
            "locale": locale,
            "data": mapping("traits", traits, convert),
        }
    )
    return compact({"user": user, "event": mapping("event", event, convert)})


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON: {value!r}")


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON; datetimes, UUIDs, Decimals, enums, sets and dataclasses allowed."""
    return json.dumps(
        body, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")
