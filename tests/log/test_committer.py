"""The group committer: concurrent appends share commits; failures reach every waiter."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tidings.domain.errors import ServiceUnavailable
from tidings.domain.ingest import AppendOutcome, AppendRequest, LogEntry
from tidings.log.committer import GroupCommitter


class SlowLog:
    """A log whose commits block until released, to show requests queueing up."""

    partitions = 1

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.release = threading.Event()
        self.fail = False

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        self.release.wait(5)
        if self.fail:
            raise OSError("disk full")
        self.batches.append(len(requests))
        return [AppendOutcome(appended=True) for _ in requests]

    def read(self, *_: Any) -> list[Any]:
        return []

    def trim(self, *_: Any) -> int:
        return 0

    def pending(self) -> int:
        return 0


def request() -> AppendRequest:
    return AppendRequest([LogEntry(1, "event", 0, {"name": "E"}, 0)])


async def test_requests_arriving_during_a_commit_share_the_next_one() -> None:
    log = SlowLog()
    committer = GroupCommitter(log)
    committer.start()
    try:
        first = asyncio.create_task(committer.append(request()))
        await asyncio.sleep(0.05)  # the first commit is now in flight and blocked
        rest = [asyncio.create_task(committer.append(request())) for _ in range(50)]
        await asyncio.sleep(0.05)
        log.release.set()
        await asyncio.gather(first, *rest)
    finally:
        committer.stop()
    assert sum(log.batches) == 51
    assert log.batches[0] == 1
    assert len(log.batches) <= 3  # never one commit per request


async def test_a_failed_commit_fails_every_waiter_with_service_unavailable() -> None:
    log = SlowLog()
    log.fail = True
    log.release.set()
    committer = GroupCommitter(log)
    committer.start()
    try:
        results = await asyncio.gather(
            *[committer.append(request()) for _ in range(5)], return_exceptions=True
        )
    finally:
        committer.stop()
    assert all(isinstance(r, ServiceUnavailable) for r in results)


async def test_a_saturated_queue_refuses_instead_of_growing() -> None:
    log = SlowLog()
    committer = GroupCommitter(log, max_queued_items=3)
    committer.start()
    try:
        in_flight = [asyncio.create_task(committer.append(request())) for _ in range(3)]
        await asyncio.sleep(0.05)  # taken by the blocked commit
        queued = [asyncio.create_task(committer.append(request())) for _ in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(ServiceUnavailable):
            await committer.append(request())
        log.release.set()
        tasks = in_flight + queued
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        log.release.set()
        committer.stop()
