"""The send interface before messaging is connected: nothing is queued.

``bootstrap.build`` uses it when no ``Sends`` is given; an action step then records the
outcome ``not_running`` (as for a campaign that is not running) and the journey goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from tidings.domain.sending import Enqueued, SendRequest

__all__ = ["UnwiredSends"]

logger = logging.getLogger(__name__)


class UnwiredSends:
    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        logger.warning(
            "journey action for campaign %d not sent: no messaging is connected",
            request.campaign_id,
        )
        return Enqueued.NOT_RUNNING

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return 0
