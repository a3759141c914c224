"""The send interface: how a journey's action step (or the API's campaign trigger) asks
messaging to send one campaign to one user.

The call queues the send **in the caller's own transaction**: a journey step records its
completion and queues its message in one commit, so a crash can never leave a completed
step without its message, nor a queued message whose step runs again and queues another.
The outbox row is unique per (campaign, profile, reference): a repeated ``enqueue`` with
the same reference is a no-op answered ``DUPLICATE``.

References name who asked, so that they are stable across retries:

    journey:<entrance id>:<step id>   an action step of a journey entrance
    trigger:<idempotency key or request id>   POST /campaigns/{id}/trigger
    blast                             a blast campaign's one send per recipient

Delivery happens later, in the messaging worker, which re-checks the user's subscription
in the transaction that claims the row (see docs/messaging.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["Enqueued", "SendRequest", "Sends"]


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One campaign to one user, under a reference unique for that pair."""

    project_id: int
    campaign_id: int
    profile_id: str
    reference: str
    # Liquid roots besides ``user`` and ``project`` (which messaging loads itself):
    # ``event`` (the entering or triggering event), ``journey``, ``context``.
    context: Mapping[str, Any] = field(default_factory=dict)
    journey_id: int | None = None
    step_id: int | None = None
    send_at: int | None = None  # microseconds since the epoch, UTC; None: as soon as possible


class Enqueued(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # this (campaign, profile, reference) was queued before
    NOT_RUNNING = "not_running"  # the campaign is missing, a draft, aborted or finished


class Sends(Protocol):
    """Implemented by ``tidings.messaging``; journeys receive it from ``bootstrap``."""

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        """Queue ``request`` in the caller's open transaction ``conn`` (a SQLAlchemy
        ``Connection``). Never sends, never commits, never raises for a duplicate."""
        ...

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        """Messages sent (or queued to send) to this profile at or after ``since``, across
        all journeys and campaigns: what a frequency cap counts."""
        ...
