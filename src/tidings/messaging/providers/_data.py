"""Reading a provider row's ``data``: the errors name the field (``data.<name>``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.domain.errors import InvalidRequest

__all__ = ["optional_str", "required_str"]


def required_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            f"data.{name} is required (a non-empty string).",
            code="parameter_missing",
            param=f"data.{name}",
        )
    return value.strip()


def optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"data.{name} must be a string.", param=f"data.{name}")
    return value.strip()
