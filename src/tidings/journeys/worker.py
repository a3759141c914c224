"""The journey worker: a thread that fires due timers (due duration delays in bulk, then
the ready queue and every other due timer entrance by entrance: see ``timers.py``),
drains the outbox of emitted events into the ingest log, and runs list and schedule
entrances.

It looks for due timers at least every ``poll`` seconds (0.2 by default), sooner when the
next timer is due sooner, so a timer fires well within a second of its due time; it runs
in ``tidings serve`` and in each ``tidings worker`` (on PostgreSQL several claim timers
side by side with SKIP LOCKED; on SQLite they take turns on the writer lock).
"""

from __future__ import annotations

import logging
import threading
import time

from tidings.journeys.engine import JourneyEngine
from tidings.journeys.sources import list_tick, schedule_tick

__all__ = ["JourneyWorker"]

logger = logging.getLogger(__name__)


class JourneyWorker:
    def __init__(self, engine: JourneyEngine, *, poll: float = 0.2, tick: float = 1.0) -> None:
        self.engine = engine
        self.poll = poll
        self.tick = tick
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._schedules: dict[int, int] = {}
        self._ticked = 0.0
        self.fired = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tidings-journeys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def run_once(self) -> int:
        """One round: due timers (until none is due; each ``run_due`` fires due delays in
        bulk first, so that a burst fires before the ready queue is worked through), the
        outbox, and, once per ``tick``, list and schedule entrances. Answers the timers
        handled (a fired delay counts again when its next step runs)."""
        engine = self.engine
        fired = 0
        while True:
            n = engine.run_due()
            fired += n
            if n < 500:
                break
        while engine.drain_outbox() >= 500:
            pass
        if time.monotonic() - self._ticked >= self.tick:
            self._ticked = time.monotonic()
            now = engine.clock()
            while list_tick(engine, now) >= 500:
                pass
            schedule_tick(engine, now, last=self._schedules)
            engine.prune(now)
            engine.drain_outbox()
        self.fired += fired
        return fired

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database may be down: try again on the next round
                logger.exception("journey worker round failed")
                self._stop.wait(1.0)
            wait = self.poll
            try:
                due = self.engine.next_due()
            except Exception:
                due = None
            if due is not None:
                wait = min(wait, max(0.0, (due - self.engine.clock()) / 1e6))
            self.wake.wait(wait)
            self.wake.clear()
