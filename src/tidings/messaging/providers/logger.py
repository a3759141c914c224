"""The ``logger`` provider: accepts every message and records it, sending nothing.

For trials and tests: what it "sent" is kept in memory (``sent``, newest last, bounded)
and written to the ``tidings.messaging.logger`` log at INFO.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from tidings.domain.channels import DeliveryResult, Message, Outcome
from tidings.domain.ids import new_ulid

__all__ = ["CHANNEL", "LoggerProvider", "build"]

CHANNEL = None  # any
logger = logging.getLogger("tidings.messaging.logger")


class LoggerProvider:
    def __init__(self, *, keep: int = 10_000, fail: str | None = None) -> None:
        self.sent: deque[Message] = deque(maxlen=keep)
        # ``data.fail``: "transient" or "permanent" makes every send fail that way (tests,
        # and trying out how a campaign reports failures).
        self.fail = fail

    async def send(self, message: Message) -> DeliveryResult:
        if self.fail == "transient":
            return DeliveryResult(Outcome.TRANSIENT, reason="logger: configured to fail")
        if self.fail == "permanent":
            return DeliveryResult(Outcome.PERMANENT, reason="logger: configured to fail")
        self.sent.append(message)
        logger.info("would send %r", message)
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id=f"log_{new_ulid()}")

    async def aclose(self) -> None:
        return None


def build(data: Mapping[str, Any]) -> LoggerProvider:
    fail = data.get("fail")
    return LoggerProvider(fail=fail if fail in ("transient", "permanent") else None)
