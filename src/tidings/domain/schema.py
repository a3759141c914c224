"""The data schema: which trait and event-property paths exist, with which types.

Nested objects are walked with dotted paths (``address.city``); arrays are a type of their
own and are not walked. A string that reads as an ISO-8601 date or date-time is a
``date``. ``null`` says nothing about a path's type and is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any, Literal

__all__ = ["MAX_DEPTH", "PathType", "infer_paths", "type_of"]

PathType = Literal["string", "number", "boolean", "date", "array", "object"]
MAX_DEPTH = 8
_DATE_SHAPE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def _is_date(value: str) -> bool:
    if value[4:5] != "-" or not _DATE_SHAPE.match(value):  # most strings fail the first test
        return False
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# What JSON decodes to, by exact type: most values are found in one lookup.
_BY_TYPE: dict[type, PathType] = {
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    tuple: "array",
    dict: "object",
}


def type_of(value: Any) -> PathType | None:
    if value is None:
        return None
    kind = _BY_TYPE.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "date" if _is_date(value) else "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "string"


def infer_paths(data: Mapping[str, Any]) -> list[tuple[str, PathType]]:
    """Every (path, type) in ``data``, objects walked to ``MAX_DEPTH`` levels."""
    return list(_walk(data, "", 1))


def _walk(data: Mapping[str, Any], prefix: str, depth: int) -> Iterator[tuple[str, PathType]]:
    for key, value in data.items():
        kind = type_of(value)
        if kind is None:
            continue
        path = f"{prefix}{key}"
        if kind == "object" and depth < MAX_DEPTH:
            yield from _walk(value, f"{path}.", depth + 1)
        else:
            yield path, kind
