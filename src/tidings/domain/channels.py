"""What a provider adapter sends and what it answers.

Messaging renders a campaign's template into one of these messages and hands it to the
adapter of the campaign's provider. The adapter classifies the provider's answer: the
delivery worker retries ``TRANSIENT`` with backoff, records ``PERMANENT`` once with its
reason, and counts ``ACCEPTED`` as sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "DeliveryResult",
    "EmailMessage",
    "InAppMessage",
    "Message",
    "Outcome",
    "ProviderAdapter",
    "PushMessage",
    "TextMessage",
    "WebhookMessage",
]


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    from_address: str
    subject: str
    html: str | None = None
    text: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # List-Unsubscribe, …


@dataclass(frozen=True, slots=True)
class TextMessage:
    to: str  # E.164
    body: str


@dataclass(frozen=True, slots=True)
class PushMessage:
    token: str  # the device's push token
    os: str  # "ios" | "android" | …, from the device record
    title: str
    body: str
    url: str | None = None
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True, slots=True)
class InAppMessage:
    content: Mapping[str, Any]  # {type, title, body, html?, image?, custom?}


Message = EmailMessage | TextMessage | PushMessage | WebhookMessage | InAppMessage


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    TRANSIENT = "transient"  # try again later (timeouts, 429, 5xx, SMTP 4xx)
    PERMANENT = "permanent"  # never succeeds (SMTP 5xx, invalid number, bad token)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    reason: str | None = None
    provider_message_id: str | None = None
    retry_after: float | None = None  # seconds, when the provider said so


class ProviderAdapter(Protocol):
    """One configured provider. Built from the provider row's ``data`` by
    ``tidings.messaging.providers.build_adapter``; never raises from ``send``: every
    failure is a ``DeliveryResult``."""

    async def send(self, message: Message) -> DeliveryResult: ...

    async def aclose(self) -> None: ...
