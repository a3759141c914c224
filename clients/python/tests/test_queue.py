"""The in-memory queue and the drop reporter (clock injected, nothing sleeps)."""

import logging

from tidings_client import DropReason
from tidings_client._queue import LOG_EVERY, DropReporter, MemoryQueue
from tidings_client._spool import Item


def test_memory_queue_is_bounded_fifo_with_byte_budget_and_settling():
    queue = MemoryQueue(maxsize=3)
    items = [queue.put(f"m{i}", b"x" * 10) for i in range(4)]
    assert items[3] is None  # full
    assert [i.seq for i in items[:3]] == [1, 2, 3]
    batch = queue.take(max_items=10, max_bytes=25)
    assert [i.message_id for i in batch] == ["m0", "m1"]
    assert not queue.settled(1)  # in flight
    queue.done(batch)
    assert queue.settled(2) and not queue.settled(3)
    assert [i.message_id for i in queue.drain()] == ["m2"]
    assert queue.settled(3)


def test_drop_warnings_are_rate_limited_but_counts_are_kept(caplog):
    now = [100.0]
    calls = []
    reporter = DropReporter(calls.append, clock=lambda: now[0])
    item = Item(1, "m", b"{}")
    with caplog.at_level(logging.WARNING, logger="tidings_client"):
        reporter.report(DropReason.QUEUE_FULL, [item], None, total=1)
        reporter.report(DropReason.QUEUE_FULL, [item, item], None, total=3)
        reporter.report(DropReason.REJECTED, [item], None, total=4)
        now[0] += LOG_EVERY
        reporter.report(DropReason.QUEUE_FULL, [item], None, total=5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "tidings_client: dropped 1 event(s) (queue_full); 1 dropped in total",
        "tidings_client: dropped 1 event(s) (rejected); 4 dropped in total",
        "tidings_client: dropped 3 event(s) (queue_full); 5 dropped in total",
    ]
    assert [len(d) for d in calls] == [1, 2, 1, 1]  # on_drop hears about every drop
