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


def json_problem(value: Mapping[str, Any], *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why this free-form object cannot be stored and read back, or None.

    Walks iteratively (a value nested thousands of levels deep must not exhaust the
    stack): deeper than ``max_depth`` levels, a NUL character in a key or a string (no
    database stores it in text or JSON), or a key longer than :data:`MAX_KEY_LENGTH`.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > max_depth:
            return f"is nested deeper than {max_depth} levels"
        if isinstance(current, dict):
            for key, item in current.items():
                if "\x00" in key:
                    return "has a key with a NUL character"
                if isinstance(item, str):
                    if "\x00" in item:
                        return "has a string with a NUL character"
                elif isinstance(item, dict | list):
                    stack.append((item, depth + 1))
        else:  # a list
            for item in current:
                if isinstance(item, str):
                    if "\x00" in item:
                        return "has a string with a NUL character"
                elif isinstance(item, dict | list):
                    stack.append((item, depth + 1))
    return None


def deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` (any decoded JSON) nests more than ``max_depth`` levels of arrays
    and objects; iterative, so any depth is safe to ask about."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > max_depth:
            return True
        items = current.values() if isinstance(current, dict) else current
        stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))
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
