"""Provider adapters, one module per provider type, built from a provider row's ``data``.

Each module exposes ``build(data: Mapping[str, Any]) -> ProviderAdapter`` and
``CHANNEL`` (the group it serves). Modules are imported on first use, so a server that
never sends push does not import its HTTP/2 and JWT dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from tidings.domain.channels import ProviderAdapter

__all__ = ["PROVIDER_TYPES", "build_adapter", "channel_of"]

# type → (module, channel). A provider's ``group`` must equal its type's channel, except
# ``logger``, which serves every channel.
PROVIDER_TYPES: dict[str, tuple[str, str | None]] = {
    "logger": ("tidings.messaging.providers.logger", None),
    "smtp": ("tidings.messaging.providers.smtp", "email"),
    "http_sms": ("tidings.messaging.providers.http_sms", "text"),
    "twilio": ("tidings.messaging.providers.twilio", "text"),
    "fcm": ("tidings.messaging.providers.fcm", "push"),
    "apns": ("tidings.messaging.providers.apns", "push"),
    "webhook": ("tidings.messaging.providers.webhook", "webhook"),
}


def channel_of(provider_type: str) -> str | None:
    """The channel a provider type serves (``None``: any); KeyError for an unknown type."""
    return PROVIDER_TYPES[provider_type][1]


def build_adapter(
    provider_type: str, data: Mapping[str, Any], *, allow_private: bool = False
) -> ProviderAdapter:
    """An adapter for a provider row (``data`` with its secrets, as stored).
    ``allow_private``: the ``webhook`` adapter may reach private and loopback addresses
    (``TIDINGS_WEBHOOK_ALLOW_PRIVATE``; domain/addresses.py)."""
    module_name, _ = PROVIDER_TYPES[provider_type]
    module = importlib.import_module(module_name)
    if getattr(module, "GUARDS_ADDRESSES", False):
        guarded: ProviderAdapter = module.build(data, allow_private=allow_private)
        return guarded
    adapter: ProviderAdapter = module.build(data)
    return adapter
