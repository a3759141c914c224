"""The limits on what a client may send and what a project may grow to, in one place.

Every value here is documented in docs/api.md ("Limits") and docs/security.md; a client
holding only a public key can reach each of them, so each one bounds what that key can
cost everyone else. The checks are pure: the API refuses input over a limit before
anything is stored (400, 413 or 422 with the limit in the message), the pipeline keeps
what it stores within the per-profile and per-project limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EPOCH",
    "MAX_BODY_DEPTH",
    "MAX_DEPTH",
    "MAX_DEVICES_PER_PROFILE",
    "MAX_GZIP_MEMBERS",
    "MAX_ITEM_BYTES",
    "MAX_PROFILE_DATA_BYTES",
    "MAX_SCHEMA_PATHS",
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "deeper_than",
    "external_id_problem",
    "json_problem",
    "text_problem",
]

# Levels of nesting of one free-form object (an event's ``data``, a profile's ``data`` or
# traits, a Segment message's ``properties``, ``traits`` or ``context``): the object itself
# is level 1, ``{"a": {"b": 1}}`` has two. Real data needs a handful.
MAX_DEPTH = 32
# A whole JSON request body: the free-form objects sit at most three levels down (a
# batch's array, a message, its ``user`` or ``properties``).
MAX_BODY_DEPTH = MAX_DEPTH + 3
# One write item (an event, a user, a device, an alias, a Segment message), re-encoded as
# compact JSON.
MAX_ITEM_BYTES = 32 * 1024
# A profile's ``data`` (its traits), as compact JSON. An update that would take it past
# this (and make it larger than it was) is not applied to ``data``.
MAX_PROFILE_DATA_BYTES = 256 * 1024
# Devices one profile keeps: the most recently updated ones.
MAX_DEVICES_PER_PROFILE = 50
# Distinct (source, event name, path, type) rows of a project's data schema; further paths
# are still stored in their events and profiles, just not listed by GET /schema.
MAX_SCHEMA_PATHS = 10_000
# Members of one gzip body (``Content-Encoding: gzip`` on /v1); SDKs send one.
MAX_GZIP_MEMBERS = 16

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps are microseconds since the epoch, UTC; only those that a calendar date in
# years 1 to 9999 can show are accepted (after converting to UTC).
MIN_TIMESTAMP = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


_CONTAINERS = (dict, list)


def json_problem(
    value: Mapping[str, Any] | list[Any], *, max_depth: int = MAX_DEPTH, nul_possible: bool = True
) -> str | None:
    """Why this free-form object cannot be stored and read back, or None.

    Walks level by level, without recursion (a value nested thousands of levels deep must
    not exhaust the stack): deeper than ``max_depth`` levels, or a NUL character in a key
    or a string (no database stores it in text or JSON). ``nul_possible=False`` (the
    request body held no ``\\u0000`` escape) checks the depth alone.
    """
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > max_depth:
            return f"is nested deeper than {max_depth} levels"
        below: list[Any] = []
        for current in level:
            if type(current) is dict:
                if nul_possible:
                    for key in current:
                        if "\x00" in key:
                            return "has a key with a NUL character"
                items = current.values()
            else:
                items = current
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    below.append(item)
                elif nul_possible and kind is str and "\x00" in item:
                    return "has a string with a NUL character"
        level = below
        depth += 1
    return None


def deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (any decoded JSON) nests more than ``max_depth`` levels of arrays
    and objects; level by level, so any depth is safe to ask about."""
    level: list[Any] = [value] if isinstance(value, _CONTAINERS) else []
    depth = 1
    while level:
        if depth > max_depth:
            return True
        below: list[Any] = []
        for current in level:
            for item in current.values() if type(current) is dict else current:
                kind = type(item)
                if kind is dict or kind is list:
                    below.append(item)
        level = below
        depth += 1
    return False


def text_problem(value: str) -> str | None:
    """Why a named string field (a name, an id, an email) cannot be stored, or None."""
    if "\x00" in value:
        return "must not contain a NUL character"
    return None


def external_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an external id, or None.

    An external id names a user in URLs (``/api/client/users/{external_id}``), where a
    ``/`` (even written ``%2F``) separates path segments and ``.`` or ``..`` are dropped
    by URL normalisation: such an id could be written but never read or erased, so every
    write route refuses it.
    """
    if "/" in value:
        return "must not contain '/' (it names the user in URLs)"
    if value in (".", ".."):
        return "must not be '.' or '..' (it names the user in URLs)"
    return text_problem(value)
