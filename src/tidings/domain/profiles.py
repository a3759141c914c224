"""Profiles: the trait merge rule and the profile value the reads return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PROFILE_FIELDS", "merge_traits"]

# Top-level profile fields a write may set besides the free-form ``data``.
PROFILE_FIELDS = ("email", "phone", "timezone", "locale")


def merge_traits(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow merge: a key in ``patch`` replaces the stored one, ``None`` removes it."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
