"""The seams between delivery and tracking (open pixel, click redirect, List-Unsubscribe)
and in-app notifications.

The delivery worker (``tidings.messaging.delivery``) knows each send by a
``TrackingRef``; given a ``Tracker`` it lets it decorate every email before the provider
sees it, and given an ``InAppSink`` it stores ``in_app`` sends as notifications, in the
transaction that claims the send (so a notification exists exactly when its send is
recorded as sent). Without a tracker, emails go as rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tidings.domain.channels import EmailMessage

__all__ = ["InAppSink", "Tracker", "TrackingRef"]


@dataclass(frozen=True, slots=True)
class TrackingRef:
    """Which send a message belongs to: what tracking tokens sign."""

    project_id: int
    profile_id: str
    campaign_id: int
    send_id: int
    subscription_id: int | None
    channel: str
    journey_id: int | None = None
    step_id: int | None = None


class Tracker(Protocol):
    def decorate_email(self, message: EmailMessage, ref: TrackingRef) -> EmailMessage:
        """Links rewritten through the click redirect, the open pixel, List-Unsubscribe
        headers (RFC 8058). Pure apart from signing: it must not do I/O."""
        ...


class InAppSink(Protocol):
    def create(
        self,
        conn: Any,
        *,
        project_id: int,
        profile_id: str,
        campaign_id: int,
        send_id: int,
        content: Mapping[str, Any],
        now: int,
    ) -> int:
        """Store one notification in the caller's transaction ``conn``; its id."""
        ...
