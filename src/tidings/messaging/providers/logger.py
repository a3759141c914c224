"""The ``logger`` provider: accepts every message and records it, sending nothing.

For trials and tests: what it "sent" is kept in memory (``sent``, newest last, bounded)
and written to the ``tidings.messaging.logger`` log at INFO. With ``data.path``, each
message is also appended to that file as one JSON line (one ``write`` with
``O_APPEND``, so several processes can share the file): a sink other processes can read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

from tidings.domain.channels import DeliveryResult, Message, Outcome
from tidings.domain.ids import new_ulid

__all__ = ["CHANNEL", "LoggerProvider", "build"]

CHANNEL = None  # any
logger = logging.getLogger("tidings.messaging.logger")


class LoggerProvider:
    def __init__(
        self,
        *,
        keep: int = 10_000,
        fail: str | None = None,
        path: str | None = None,
        delay: float = 0.0,
    ) -> None:
        # ``data.delay``: seconds it takes to answer after taking a message (a slow
        # provider, for trials and crash tests).
        self.delay = delay
        self.sent: deque[Message] = deque(maxlen=keep)
        self.path = path
        self._fd: int | None = None
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
        provider_id = f"log_{new_ulid()}"
        if self.path is not None:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            line = {"kind": type(message).__name__, "id": provider_id}
            line.update(dataclasses.asdict(message))
            os.write(self._fd, json.dumps(line, default=str).encode() + b"\n")
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return DeliveryResult(Outcome.ACCEPTED, provider_message_id=provider_id)

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def build(data: Mapping[str, Any]) -> LoggerProvider:
    fail = data.get("fail")
    path = data.get("path")
    delay = data.get("delay")
    return LoggerProvider(
        fail=fail if fail in ("transient", "permanent") else None,
        path=path if isinstance(path, str) and path else None,
        delay=float(delay) if isinstance(delay, int | float) and 0 < delay <= 60 else 0.0,
    )
