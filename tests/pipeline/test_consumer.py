"""The consumer's passes over the log: what it reads, and when it only asks for the head."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import create_project, make_services, make_settings
from tests.pipeline.test_processor import append, processor
from tests.plans import plans_of
from tidings.pipeline.consumer import Consumer, ProcessedWatch
from tidings.pipeline.priority import IdlePriority


def test_a_busy_consumer_reads_on_and_an_idle_one_only_asks_for_the_head(tmp_path: Any) -> None:
    services = make_services(make_settings(tmp_path))
    try:
        project = create_project(services)
        log = services.log
        partitions = range(log.partitions)
        consumer = Consumer(log, processor(services), partitions=partitions, watch=ProcessedWatch())
        services.profiles.ensure_positions(partitions)
        consumer.positions = {p: 0 for p in partitions}
        calls: list[str] = []
        last_seq, read_all = log.last_seq, log.read_all

        def counted_last_seq() -> int:
            calls.append("head")
            return last_seq()

        def counted_read_all(after: int, limit: int) -> Any:
            calls.append("read")
            return read_all(after, limit)

        log.last_seq = counted_last_seq  # type: ignore[method-assign]
        log.read_all = counted_read_all  # type: ignore[method-assign]

        def poll() -> tuple[int, list[str]]:
            calls.clear()
            return consumer.poll_once(), list(calls)

        def event(n: int) -> tuple[str, dict[str, Any]]:
            return "event", {"name": "E", "external_id": f"u{n}", "message_id": f"m{n}"}

        assert poll() == (0, ["head", "read"])  # an empty log: asked, then read
        assert poll() == (0, ["head"])  # nothing appended since: no read
        append(services, project.id, [event(1), event(2)])
        assert poll() == (2, ["head", "read"])
        append(services, project.id, [event(3)])
        # After a pass that read entries there may be more: read on, without asking first.
        assert poll() == (1, ["read"])
        assert poll() == (0, ["read"])  # nothing more
        assert poll() == (0, ["head", "read"])  # empty again: ask first (head moved on)
        assert poll() == (0, ["head"])
        append(services, project.id, [event(4)])
        assert poll() == (1, ["head", "read"])  # an entry after an empty pass is found
        assert consumer.processed == 4
    finally:
        services.close()


def test_the_lag_is_what_the_consumer_has_not_applied_and_costs_no_scan(tmp_path: Any) -> None:
    """On SQLite the log's lag (``/api/health``'s ``log_lag``) is exact as the consumer works
    through the log, and is read from two maxima rather than by reading every entry."""
    services = make_services(make_settings(tmp_path))
    try:
        project = create_project(services)
        log = services.log
        partitions = range(log.partitions)
        consumer = Consumer(
            log, processor(services), partitions=partitions, watch=ProcessedWatch(), batch_size=3
        )
        services.profiles.ensure_positions(partitions)
        consumer.positions = {p: 0 for p in partitions}
        assert log.pending() == 0
        for n in range(7):  # one append each, as separate requests would be
            payload = {"name": "E", "external_id": f"u{n}", "message_id": f"m{n}"}
            append(services, project.id, [("event", payload)])
        assert log.pending() == 7
        left = 7
        while left:
            left -= consumer.poll_once()
            assert log.pending() == left
        append(services, project.id, [("event", {"name": "E", "external_id": "late"})])
        assert log.pending() == 1

        plans = plans_of(log.reader, log.pending, "ingest_log")  # type: ignore[attr-defined]
        assert plans and not any("SCAN ingest_log" in plan for plan in plans), plans
    finally:
        services.close()


@pytest.mark.skipif(not IdlePriority.supported(), reason="no SCHED_IDLE round trip here")
def test_a_worker_thread_keeps_up_at_idle_priority_and_competes_when_behind(
    tmp_path: Any,
) -> None:
    """SCHED_IDLE while the backlog is young; the normal class once the oldest entry read
    waited longer than the lag; idle again when caught up (the class is per thread, so
    every pass runs on one thread of its own)."""
    services = make_services(make_settings(tmp_path))
    accepted = 1_000_000  # the test log's first entry, in microseconds (append())
    now = [accepted]
    try:
        project = create_project(services)
        log = services.log
        partitions = range(log.partitions)
        priority = IdlePriority(lag=2.0)
        consumer = Consumer(
            log,
            processor(services),
            partitions=partitions,
            watch=ProcessedWatch(),
            batch_size=2,
            clock=lambda: now[0],
            priority=priority,
        )
        services.profiles.ensure_positions(partitions)
        consumer.positions = {p: 0 for p in partitions}
        n = iter(range(100))

        def events(count: int) -> None:
            items = []
            for _ in range(count):
                i = next(n)
                items.append(
                    ("event", {"name": "E", "external_id": f"u{i}", "message_id": f"m{i}"})
                )
            append(services, project.id, items)

        with ThreadPoolExecutor(max_workers=1) as thread:

            def poll() -> tuple[int, str]:
                def run() -> tuple[int, str]:
                    applied = consumer.poll_once()
                    policy = os.sched_getscheduler(0)
                    return applied, {os.SCHED_IDLE: "idle", os.SCHED_OTHER: "normal"}[policy]

                return thread.submit(run).result()

            events(3)
            now[0] = accepted + 500_000  # entries half a second old: keeping up
            assert poll() == (2, "normal")  # a full batch: not caught up yet, no change
            assert poll() == (1, "idle")  # caught up with a young backlog
            events(3)
            now[0] = accepted + 5_000_000  # the oldest entry read waited 5 s: behind
            assert poll() == (2, "normal")
            assert poll() == (1, "normal")  # at the head, but what it read was old
            assert poll() == (0, "idle")  # nothing left
            assert priority.switches == 3
    finally:
        services.close()


def test_an_idle_consumer_asks_the_timers_hook_every_timers_every_not_every_pass(
    tmp_path: Any,
) -> None:
    """The hook (segment timers, back-fills) costs queries: an idle worker polling the log
    every millisecond asks it ten times a second; one with more to do, on every pass."""
    services = make_services(make_settings(tmp_path))
    try:
        log = services.log
        partitions = range(log.partitions)
        services.profiles.ensure_positions(partitions)
        for answer in (0, 1):
            calls: list[int] = []

            def hook(_: int, answer: int = answer, calls: list[int] = calls) -> int:
                calls.append(1)
                return answer

            consumer = Consumer(
                log,
                processor(services),
                partitions=partitions,
                watch=ProcessedWatch(),
                idle_wait=0.001,
                timers=hook,
                timers_every=0.1,
            )
            consumer.start()
            time.sleep(0.5)
            consumer.stop()
            if answer == 0:
                assert 1 <= len(calls) <= 7, calls  # at 0, 0.1, ..., 0.5 s
            else:
                assert len(calls) >= 20, calls  # busy: asked again on every pass
    finally:
        services.close()
