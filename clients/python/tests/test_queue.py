"""The in-memory queue and the drop reporter (clock injected, nothing sleeps)."""

import logging

from tidings_client import DropReason, TidingsError
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


def test_drops_held_back_by_the_rate_limit_are_logged_when_due_and_at_the_end(caplog):
    now = [100.0]
    reporter = DropReporter(None, clock=lambda: now[0])
    item = Item(1, "m", b"{}")
    error = TidingsError("nope")
    total = 0

    def drop(reason, n, err=None):
        nonlocal total
        total += n
        return reporter.report(reason, [item] * n, err, total=total)

    with caplog.at_level(logging.WARNING, logger="tidings_client"):
        assert drop(DropReason.QUEUE_FULL, 1) is False  # logged at once
        assert reporter.due_in() is None
        assert drop(DropReason.QUEUE_FULL, 1) is True  # starts holding back
        assert [drop(DropReason.QUEUE_FULL, 1) for _ in range(10_598)] == [False] * 10_598
        assert reporter.due_in() == LOG_EVERY
        reporter.log_held_back(due_only=True)  # not due yet: nothing
        assert len(caplog.records) == 1
        now[0] += LOG_EVERY - 1
        assert reporter.due_in() == 1
        now[0] += 1
        assert reporter.due_in() == 0
        reporter.log_held_back(due_only=True)  # due: the whole count, without a new drop
        assert reporter.due_in() is None
        drop(DropReason.QUEUE_FULL, 5)  # just logged: held back
        drop(DropReason.REJECTED, 2, error)  # another reason: logged at once
        drop(DropReason.REJECTED, 3, error)  # held back, with its error
        reporter.log_held_back(due_only=True)  # none due
        reporter.log_held_back()  # close() / exit: everything left, due or not
        reporter.log_held_back()  # nothing left
    assert [r.getMessage() for r in caplog.records] == [
        "tidings_client: dropped 1 event(s) (queue_full); 1 dropped in total",
        "tidings_client: dropped 10599 event(s) (queue_full); 10600 dropped in total",
        "tidings_client: dropped 2 event(s) (rejected): nope; 10607 dropped in total",
        "tidings_client: dropped 5 event(s) (queue_full); 10610 dropped in total",
        "tidings_client: dropped 3 event(s) (rejected): nope; 10610 dropped in total",
    ]
