"""What waits to be sent (the in-memory queue) and what was given up (drops, reported)."""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._exceptions import TidingsError
from ._spool import Item

__all__ = ["DropReason", "DropReporter", "Dropped", "MemoryQueue"]

logger = logging.getLogger("tidings_client")

LOG_EVERY = 10.0
"""Seconds between two drop warnings of the same reason; the counts are never lost."""


class DropReason(enum.StrEnum):
    """Why events were given up."""

    QUEUE_FULL = "queue_full"
    """The in-memory queue already held ``max_queue_size`` events."""
    SPOOL_FULL = "spool_full"
    """The spool already held ``spool_max_events`` events."""
    SPOOL_ERROR = "spool_error"
    """The spool could not be written (disk full, file removed, …)."""
    REJECTED = "rejected"
    """The server refused the event for good (a 4xx other than 408 and 429)."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """Still failing after ``retry.max_retries`` retries (without a spool)."""
    SHUTDOWN = "shutdown"
    """Not delivered within the ``close`` / exit budget (without a spool)."""
    CLOSED = "closed"
    """Tracked after ``close()``."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Events the client gave up on, as passed to ``on_drop``."""

    reason: DropReason
    message_ids: tuple[str, ...]
    bodies: tuple[bytes, ...]
    error: TidingsError | None = None

    @property
    def events(self) -> list[Any]:
        """The dropped events as sent (decoded JSON), e.g. to store them elsewhere."""
        return [json.loads(body) for body in self.bodies]

    def __len__(self) -> int:
        return len(self.message_ids)


class MemoryQueue:
    """FIFO of items with in-flight tracking; guarded by the client's condition."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Item] = deque()
        self._in_flight: set[int] = set()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message_id: str, body: bytes) -> Item | None:
        if len(self._items) >= self.maxsize:
            return None
        self._seq += 1
        item = Item(self._seq, message_id, body)
        self._items.append(item)
        return item

    def take(self, max_items: int, max_bytes: int) -> list[Item]:
        items: list[Item] = []
        size = 0
        while self._items and len(items) < max_items:
            size += len(self._items[0].body)
            if items and size > max_bytes:
                break
            items.append(self._items.popleft())
        self._in_flight.update(item.seq for item in items)
        return items

    def done(self, items: list[Item]) -> None:
        self._in_flight.difference_update(item.seq for item in items)

    def settled(self, seq: int) -> bool:
        head_ok = not self._items or self._items[0].seq > seq
        return head_ok and all(s > seq for s in self._in_flight)

    def drain(self) -> list[Item]:
        items = list(self._items)
        self._items.clear()
        return items


class DropReporter:
    """Tells the host about lost events: ``on_drop``, and a rate-limited warning.

    At most one warning per reason every ``LOG_EVERY`` seconds; what the limit holds back is
    never lost from the log: the next line of that reason carries the count dropped since the
    previous one, and ``log_held_back`` writes what is still held back (the client calls it
    once the interval is up, at ``close()`` and at interpreter exit). So the counts logged for
    a reason add up to the events dropped for it.
    """

    def __init__(
        self,
        on_drop: Callable[[Dropped], object] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_drop = on_drop
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_at: dict[DropReason, float] = {}
        # Per reason: events dropped since its last line and not logged yet, the latest error.
        self._held: dict[DropReason, tuple[int, TidingsError | None]] = {}
        self._total = 0

    def report(
        self, reason: DropReason, items: list[Item], error: TidingsError | None, total: int
    ) -> bool:
        """Log (at most once per ``LOG_EVERY`` per reason, with counts) and call on_drop.

        ``total`` is the client's count of dropped events, this drop included. Returns True
        when this drop starts holding back a count for ``reason`` (to be logged later).
        """
        now = self._clock()
        with self._lock:
            self._total = max(self._total, total)
            held, _ = self._held.pop(reason, (0, None))
            last = self._logged_at.get(reason)
            if last is None or now - last >= LOG_EVERY:
                self._logged_at[reason] = now
                log_count = held + len(items)
            else:
                self._held[reason] = (held + len(items), error)
                log_count = 0
        if log_count:
            _log_drops(log_count, reason, error, total)
        if self._on_drop is not None:
            dropped = Dropped(
                reason=reason,
                message_ids=tuple(item.message_id for item in items),
                bodies=tuple(item.body for item in items),
                error=error,
            )
            try:
                self._on_drop(dropped)
            except Exception:  # never raise into the host
                logger.exception("tidings_client: the on_drop callback raised")
        return log_count == 0 and held == 0

    def due_in(self) -> float | None:
        """Seconds until a held-back count may be logged (0: now); None when none is held."""
        if not self._held:
            return None
        with self._lock:
            if not self._held:
                return None
            first = min(self._logged_at[reason] for reason in self._held)
            return max(0.0, first + LOG_EVERY - self._clock())

    def log_held_back(self, *, due_only: bool = False) -> None:
        """Log the counts held back by the rate limit (with ``due_only``: once it allows)."""
        if not self._held:  # the common case, without the lock
            return
        now = self._clock()
        lines: list[tuple[int, DropReason, TidingsError | None]] = []
        with self._lock:
            for reason, (count, error) in list(self._held.items()):
                if due_only and now - self._logged_at[reason] < LOG_EVERY:
                    continue
                del self._held[reason]
                self._logged_at[reason] = now
                lines.append((count, reason, error))
            total = self._total
        for count, reason, error in lines:
            _log_drops(count, reason, error, total)


def _log_drops(count: int, reason: DropReason, error: TidingsError | None, total: int) -> None:
    logger.warning(
        "tidings_client: dropped %d event(s) (%s)%s; %d dropped in total",
        count,
        reason.value,
        f": {error}" if error else "",
        total,
    )
