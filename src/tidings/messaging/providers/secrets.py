"""Which fields of a provider's ``data`` are secrets, and masking them in answers.

The providers API answers ``"********"`` in place of each secret, and a ``PATCH`` that
sends ``"********"`` back keeps the stored value (ENGAGEMENT.md, Providers).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from tidings.messaging.providers import PROVIDER_TYPES

__all__ = ["MASK", "keep_secrets", "mask_secrets", "secret_fields"]

MASK = "********"


def secret_fields(provider_type: str) -> frozenset[str]:
    """The secret top-level fields of ``data`` for a provider type (KeyError if unknown)."""
    module_name, _ = PROVIDER_TYPES[provider_type]
    module = importlib.import_module(module_name)
    fields: frozenset[str] = getattr(module, "SECRET_FIELDS", frozenset())
    return fields


def mask_secrets(provider_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as an answer shows it: each secret that is set replaced by ``MASK``."""
    secret = secret_fields(provider_type)
    return {k: MASK if k in secret and v not in (None, "") else v for k, v in data.items()}


def keep_secrets(
    provider_type: str, stored: Mapping[str, Any], patch: Mapping[str, Any]
) -> dict[str, Any]:
    """``patch`` with each secret sent back as ``MASK`` replaced by the stored value."""
    secret = secret_fields(provider_type)
    return {k: stored.get(k) if k in secret and v == MASK else v for k, v in patch.items()}
