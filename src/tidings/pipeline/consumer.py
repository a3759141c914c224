"""The log consumer thread and the watch that lets callers wait for processing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tidings.log.committer import storage_full
from tidings.log.port import IngestLog
from tidings.pipeline.priority import IdlePriority
from tidings.pipeline.processor import BatchProcessor, StaleBatch
from tidings.store.leases import Leases

__all__ = ["Consumer", "ProcessedWatch"]

logger = logging.getLogger(__name__)

_Target = list[tuple[int, int]]


class ProcessedWatch:
    """Positions the consumer has committed, and futures waiting for them."""

    def __init__(self, positions: dict[int, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._positions: dict[int, int] = dict(positions or {})
        self._waiters: list[tuple[_Target, asyncio.Future[None], asyncio.AbstractEventLoop]] = []

    def _reached(self, targets: _Target) -> bool:
        return all(self._positions.get(p, 0) >= seq for p, seq in targets)

    def advance(self, partition: int, seq: int) -> None:
        with self._lock:
            self._positions[partition] = max(seq, self._positions.get(partition, 0))
            ready = [w for w in self._waiters if self._reached(w[0])]
            if not ready:
                return
            self._waiters = [w for w in self._waiters if not self._reached(w[0])]
        for _, future, loop in ready:
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(_set_done, future)

    async def wait(self, targets: Iterable[tuple[int, int]], timeout: float) -> bool:  # noqa: ASYNC109
        """True once every (partition, seq) is processed, False after ``timeout``."""
        target_list = list(targets)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._reached(target_list):
                return True
            self._waiters.append((target_list, future, loop))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[1] is not future]
            return False
        return True


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Consumer:
    """Reads its partitions in order and applies batches until stopped.

    Its partitions are fixed (``partitions``) or leased (``leases``): then it rebalances
    every ``rebalance_every`` seconds, between batches, and starts a partition it gains
    from the position stored with the last batch applied to it.
    """

    def __init__(
        self,
        log: IngestLog,
        processor: BatchProcessor,
        *,
        partitions: Iterable[int] = (),
        leases: Leases | None = None,
        rebalance_every: float = 1.0,
        watch: ProcessedWatch,
        batch_size: int = 1000,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
        idle_wait: float = 0.5,
        trim_every: float = 2.0,
        maintenance: Callable[[], None] | None = None,
        maintain_every: float = 2.0,
        coalesce: float = 0.005,
        timers: Callable[[int], int] | None = None,
        timers_every: float = 0.1,
        priority: IdlePriority | None = None,
        idle_after: float | None = None,
        sleep_wait: float = 0.5,
        dozing: Callable[[bool], None] | None = None,
    ) -> None:
        self.log = log
        self.processor = processor
        self.partitions = sorted(set(partitions))
        self.leases = leases
        self.rebalance_every = rebalance_every
        self.positions: dict[int, int] = {}  # loaded from the store by start()
        self.watch = watch
        self.batch_size = batch_size
        self.clock = clock
        self.idle_wait = idle_wait
        self.trim_every = trim_every
        self.maintenance = maintenance
        self.maintain_every = maintain_every
        # Called with ``clock()`` on every pass of the loop (segment timers and back-fills):
        # returns how much it did; 0 lets the loop sleep when there is nothing else to do.
        self.timers = timers
        # An idle hook is asked again after this many seconds, not on every pass: each
        # call is a few queries, and an idle worker polls the log every few milliseconds.
        self.timers_every = timers_every
        self._timer_failures = 0
        self._timers_retry_at = 0.0
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trimmed: dict[int, int] = {}
        self._idle_at_seq: int | None = None
        self._busy = False  # the last pass read entries: there may be more
        self._read_from: int | None = None  # owns_all: the last entry read_all returned
        self.coalesce = coalesce
        # A worker process's CPU priority, set from this thread by what each read finds.
        self.priority = priority
        # Dozing (``tidings serve``'s worker child, see pipeline/doorbell.py): after
        # ``idle_after`` seconds without entries, ``dozing(True)`` asks to be woken (by
        # ``wake``) and the loop waits ``sleep_wait`` instead of ``idle_wait``;
        # ``dozing(False)`` once entries come. None: poll every ``idle_wait`` throughout.
        self.idle_after = idle_after
        self.sleep_wait = sleep_wait
        self.dozing = dozing
        self.processed = 0
        self.stale = 0  # batches computed again because another worker got there first

    @property
    def owns_all(self) -> bool:
        return len(self.partitions) == self.log.partitions

    def holds(self, partitions: Iterable[int]) -> bool:
        held = set(self.partitions)
        return all(p in held for p in partitions)

    def start(self) -> None:
        self._stop.clear()
        self.processor.store.ensure_positions(range(self.log.partitions))
        if self.leases is not None:
            self.partitions = sorted(self.leases.rebalance())
        self._reload_positions()
        self._thread = threading.Thread(target=self._run, name="tidings-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.leases is not None:
            self.leases.close()
            self.partitions = []

    def _reload_positions(self) -> None:
        stored = self.load_positions()
        self.positions = {p: stored.get(p, 0) for p in self.partitions}
        self._read_from = None
        for partition, seq in self.positions.items():
            self.watch.advance(partition, seq)

    def rebalance(self) -> None:
        if self.leases is None:
            return
        held = sorted(self.leases.rebalance())
        if held != self.partitions:
            self.partitions = held
            self._idle_at_seq = None
            self._reload_positions()

    def poll_once(self) -> int:
        """Process at most one batch per partition; returns how many records were applied."""
        if not self.partitions:
            return 0
        newest: int | None = None
        if not self._busy:
            # After an empty pass, the log's head (cheap) says whether anything was appended
            # since; after a pass that read entries, reading on costs no more than asking.
            newest = self.log.last_seq()
            if newest == self._idle_at_seq:
                return 0  # nothing appended since the last empty pass: skip the reads
        read_to = None
        if self.owns_all:
            # One read for every partition, skipping what a partition already applied. It
            # goes on from the last entry read, not from the lowest position: a partition
            # without new entries keeps an old position, and a log that is not trimmed in
            # the batch's transaction (JetStream) would hand back the same entries.
            low = self._read_from
            if low is None:
                low = min(self.positions.values(), default=0)
            read = self.log.read_all(low, self.batch_size)
            read_to = read[-1].seq if read else None
            records = [r for r in read if r.seq > self.positions[r.partition]]
            caught_up = len(read) < self.batch_size
        else:
            records = []
            caught_up = True
            for partition in self.partitions:
                read = self.log.read(partition, self.positions[partition], self.batch_size)
                records += read
                caught_up = caught_up and len(read) < self.batch_size
        if self.priority is not None:
            oldest = min((r.accepted_at for r in records), default=None)
            age = None if oldest is None else (self.clock() - oldest) / 1_000_000
            self.priority.update(age, caught_up)
        applied = len(records)
        if records:
            also = None
            if self.owns_all:
                # Every entry up to the batch's last one is applied once this commits:
                # forget them in the same transaction rather than in separate deletes.
                newest_applied = records[-1].seq

                def also(conn: Any) -> None:
                    self.log.trim_through(conn, newest_applied)

            expected = {r.partition: self.positions[r.partition] for r in records}
            try:
                self.processor.process(records, self.clock(), also, expected)
            except StaleBatch as stale:
                # Another worker wrote what this batch was computed from: start again
                # from the stored positions (which may now belong to someone else).
                logger.info("batch computed again: %s", stale)
                self.stale += 1
                self._idle_at_seq = None
                self._reload_positions()
                return 0
            for record in records:
                self.positions[record.partition] = record.seq
            for partition in {r.partition for r in records}:
                self.watch.advance(partition, self.positions[partition])
        if read_to is not None:
            self._read_from = read_to
        self.processed += applied
        self._busy = bool(applied) or read_to is not None
        self._idle_at_seq = None if self._busy else newest
        return applied

    def load_positions(self) -> dict[int, int]:
        return self.processor.store.positions()

    def trim(self) -> None:
        # With owns_all, a log in the database was trimmed with each batch
        # (trim_through); SQLite's log file and JetStream cannot be, so each partition is
        # trimmed here. Cheap where there is nothing to do.
        for partition, seq in self.positions.items():
            if seq > self._trimmed.get(partition, 0):
                self.log.trim(partition, seq)
                self._trimmed[partition] = seq

    def _maintain(self) -> None:
        if self.maintenance is not None:
            self.maintenance()

    def run_timers(self) -> int:
        """One call of the ``timers`` hook. Its failures are logged and backed off without
        holding up the log (the hook's work is retried on a later pass)."""
        if self.timers is None:
            return 0
        if self._timer_failures and time.monotonic() < self._timers_retry_at:
            return 0
        try:
            done = self.timers(self.clock())
        except Exception:
            self._timer_failures += 1
            delay = min(5.0, 0.1 * 2**self._timer_failures)
            self._timers_retry_at = time.monotonic() + delay
            logger.exception("segment timers or back-fill failed; retrying in %.1f s", delay)
            return 0
        self._timer_failures = 0
        return done

    def _run(self) -> None:
        last_trim = last_rebalance = last_maintenance = time.monotonic()
        timers_at = float("-inf")
        busy = 0
        failures = 0
        idle_since: float | None = None
        raised = False  # dozing(True) was said last
        armed = False  # ... and the log was looked at since
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_rebalance > self.rebalance_every:
                    self.rebalance()
                    last_rebalance = time.monotonic()
                if busy or time.monotonic() - timers_at >= self.timers_every:
                    timers_at = time.monotonic()
                    busy = self.run_timers()  # busy: more to do, ask again at once
                applied = self.poll_once()
                if time.monotonic() - last_trim > self.trim_every:
                    self.trim()
                    last_trim = time.monotonic()
                if time.monotonic() - last_maintenance > self.maintain_every:
                    self._maintain()
                    last_maintenance = time.monotonic()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                if storage_full(exc):  # one line: a traceback per retry would add nothing
                    logger.error(
                        "processing a log batch failed: the disk is full; retrying in %.1f s", delay
                    )
                else:
                    logger.exception("processing a log batch failed; retrying")
                self._stop.wait(delay)
                continue
            if not applied and not busy:
                now = time.monotonic()
                idle_since = now if idle_since is None else idle_since
                dozing = self.dozing
                if dozing is None or self.idle_after is None or now - idle_since < self.idle_after:
                    self.wake.wait(self.idle_wait)
                elif not armed:
                    # Ask to be woken, then look at the log once more before waiting:
                    # an entry committed before the flag was up rang no bell.
                    dozing(True)
                    raised = armed = True
                    continue
                else:
                    self.wake.wait(self.sleep_wait)
                    armed = False  # a ring lowered the flag: raise it again next round
                self.wake.clear()
                continue
            idle_since = None
            if raised and self.dozing is not None:
                self.dozing(False)  # busy: no bells wanted
                raised = armed = False
            if applied < self.batch_size // 4:
                # A small batch: let a few milliseconds of entries gather first. Each batch
                # has a fixed cost (reads, a transaction), paid under the API's GIL.
                self._stop.wait(self.coalesce)
