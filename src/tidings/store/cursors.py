"""Page cursors: the one codec every paged route uses.

A cursor is the position of the row at a page's edge (a tuple of ints and strings, e.g.
``("n", created_at, id)``), sent as URL-safe base64 of its compact JSON. It comes back as
user input, so :func:`decode` checks everything before a query sees it: its length, its
alphabet, its JSON, its shape (``msgspec`` types), every integer within 64 bits (what the
columns hold) and every string within 512 characters and free of NUL. Anything else is
400 ``parameter_invalid_format`` on ``cursor``: never a database error.

Usage, in a store module::

    from tidings.store import cursors

    next_cursor = cursors.encode("n", row.created_at, row.id)
    direction, created_at, row_id = cursors.decode(cursor, tuple[Literal["n", "p"], int, str])
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import msgspec

from tidings.domain.errors import InvalidRequest

__all__ = ["MAX_CURSOR_LENGTH", "decode", "encode", "invalid_cursor"]

MAX_CURSOR_LENGTH = 4096
_MAX_STRING = 512  # a schema path; ids are at most 255
_INT64 = (-(2**63), 2**63 - 1)
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def encode(*values: int | str) -> str:
    """The cursor for a position (ints and strings)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode().rstrip("=")


def invalid_cursor(param: str = "cursor") -> InvalidRequest:
    return InvalidRequest(
        "The cursor is not one this server issued; start again without it.", param=param
    )


def decode(cursor: str, shape: Any, *, param: str = "cursor") -> Any:
    """The position in ``cursor``, of type ``shape`` (a tuple type); 400 when it is not
    one :func:`encode` could have made."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or not _ALPHABET.match(cursor):
        raise invalid_cursor(param)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = msgspec.json.decode(raw, type=shape)
    except (ValueError, binascii.Error, msgspec.DecodeError, RecursionError):
        raise invalid_cursor(param) from None
    for part in value:
        if isinstance(part, bool):
            continue
        if isinstance(part, int) and not _INT64[0] <= part <= _INT64[1]:
            raise invalid_cursor(param)
        if isinstance(part, str) and (len(part) > _MAX_STRING or "\x00" in part):
            raise invalid_cursor(param)
    return value
