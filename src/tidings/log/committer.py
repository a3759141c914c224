"""The group committer: concurrent appends share one durable commit.

Requests queue up while the previous commit is in flight; the committer thread then
writes everything queued in one transaction and resolves each request's future. Under
load, batches grow by themselves; when idle, a lone request is committed at once.
Nothing is acknowledged before its commit returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from tidings.domain.errors import ServiceUnavailable
from tidings.domain.ingest import AppendOutcome, AppendRequest
from tidings.log.port import IngestLog

if TYPE_CHECKING:
    from tidings.log.writer import LogWriterProcess

__all__ = [
    "STORAGE_FULL_RETRY_AFTER",
    "FullDiskLog",
    "GroupCommitter",
    "storage_full",
    "storage_full_error",
]

logger = logging.getLogger(__name__)

STORAGE_FULL_RETRY_AFTER = 5  # seconds: space comes back when someone frees it, not at once
_SQLITE_FULL = 13  # "database or disk is full" (also a WAL or checkpoint write hitting ENOSPC)
_POSTGRESQL_DISK_FULL = "53100"


def storage_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it wraps, says the database's storage is full:
    SQLite's SQLITE_FULL, PostgreSQL's disk_full (by code: messages are translated)."""
    current: BaseException | None = error
    for _ in range(5):  # the SQLAlchemy error, the driver's, what caused that
        if current is None:
            return False
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRESQL_DISK_FULL:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def storage_full_error() -> ServiceUnavailable:
    """The 503 for a write refused because the database's storage is full (nothing of it
    was written: the transaction rolled back)."""
    return ServiceUnavailable(
        "The database's disk is full, so nothing was written; retry later.",
        retry_after=STORAGE_FULL_RETRY_AFTER,
    )


class FullDiskLog:
    """Commits refused because the disk is full: one line every 10 s at most (a
    traceback per failed commit would add nothing but more writes to a full disk)."""

    def __init__(self) -> None:
        self._failures = 0
        self._logged_at = float("-inf")

    def failed(self) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            logger.error(
                "ingest log append failed: the database's disk is full "
                "(%d failed commits since the last message)",
                self._failures,
            )
            self._logged_at, self._failures = now, 0


_Waiter = tuple[AppendRequest, asyncio.Future[AppendOutcome], asyncio.AbstractEventLoop]


class GroupCommitter:
    def __init__(
        self,
        log: IngestLog,
        *,
        max_items: int = 20_000,
        max_queued_items: int = 200_000,
        on_commit: Callable[[], None] | None = None,
        direct: LogWriterProcess | None = None,
    ) -> None:
        self._log = log
        # SQLite's log file: plain appends go to the log writer process instead.
        self.direct = direct
        self._max_items = max_items
        self._max_queued = max_queued_items
        # Called after each commit (wakes a consumer); may be set until start().
        self.on_commit = on_commit
        self._queue: deque[_Waiter] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._commits = 0
        self._committed_items = 0
        self.full_disk = FullDiskLog()

    @property
    def commits(self) -> int:
        return self._commits + (self.direct.commits if self.direct is not None else 0)

    @property
    def committed_items(self) -> int:
        direct = self.direct.committed_items if self.direct is not None else 0
        return self._committed_items + direct

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tidings-committer", daemon=True)
        self._thread.start()
        if self.direct is not None:
            self.direct.on_commit = self.on_commit
            self.direct.full_disk = self.full_disk  # one line every 10 s for both
            self.direct.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.direct is not None:
            self.direct.stop(timeout)

    async def append(self, request: AppendRequest) -> AppendOutcome:
        if self.direct is not None and request.idempotency is None and not request.want_positions:
            await self.direct.append(request.entries)
            return AppendOutcome(appended=True)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendOutcome] = loop.create_future()
        size = max(1, len(request.entries))
        with self._cond:
            if self._stopping:
                raise ServiceUnavailable("The server is shutting down; retry shortly.")
            if self._queued_items + size > self._max_queued:
                raise ServiceUnavailable("The ingest log is saturated; retry shortly.")
            self._queue.append((request, future, loop))
            self._queued_items += size
            self._cond.notify()
        return await future

    def _take(self) -> list[_Waiter] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch: list[_Waiter] = []
            items = 0
            while self._queue and (not batch or items < self._max_items):
                waiter = self._queue.popleft()
                n = max(1, len(waiter[0].entries))
                items += n
                self._queued_items -= n
                batch.append(waiter)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                outcomes = self._log.append([request for request, _, _ in batch])
            except Exception as exc:  # every waiter must hear about it
                if storage_full(exc):  # one line, every 10 s at most: a traceback adds nothing
                    self.full_disk.failed()
                    error = storage_full_error()
                else:
                    logger.exception("ingest log append failed")
                    error = ServiceUnavailable(
                        "The ingest log could not be written; retry shortly."
                    )
                error.__cause__ = exc
                self._settle(batch, None, error)
                continue
            self._commits += 1
            self._committed_items += sum(len(r.entries) for r, _, _ in batch)
            self._settle(batch, outcomes, None)
            if self.on_commit is not None:
                self.on_commit()

    @staticmethod
    def _settle(
        batch: list[_Waiter],
        outcomes: list[AppendOutcome] | None,
        error: BaseException | None,
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[int, asyncio.Future[AppendOutcome]]]]
        by_loop = {}
        for index, (_, future, loop) in enumerate(batch):
            by_loop.setdefault(loop, []).append((index, future))

        def resolve(items: list[tuple[int, asyncio.Future[AppendOutcome]]]) -> None:
            for index, future in items:
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    assert outcomes is not None
                    future.set_result(outcomes[index])

        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(resolve, items)
