"""The delivery worker's thread: a ``Delivery`` run round after round in a thread with
its own event loop (``tidings serve`` and ``tidings worker`` start it through
``Services.start``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from tidings.messaging.delivery import Delivery

__all__ = ["DeliveryWorker", "loop_factory"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the delivery thread runs on: uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:  # a platform without uvloop: asyncio's loop
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


logger = logging.getLogger("tidings.messaging.delivery")


class DeliveryWorker:
    """Runs a ``Delivery`` in a thread with its own event loop (``tidings serve`` and
    ``tidings worker``). ``wake()`` cuts an idle wait short."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tidings-delivery")
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        # uvloop where it is installed (uvicorn[standard] brings it): a round's provider
        # calls are many small socket round trips, and with uvloop the HTTP adapters took
        # 15-25% less CPU per send (docs/benchmarks.md, "Sends").
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        idle = self.delivery.config.idle_wait
        last_tick = 0.0
        try:
            while not self._stop.is_set():
                busy = False
                try:
                    if time.monotonic() - last_tick >= 0.25:
                        busy = self.delivery.tick()
                        last_tick = time.monotonic()
                    done = await self.delivery.run_once()
                    busy = busy or done > 0
                    self.rounds += 1
                except Exception:
                    logger.exception("delivery round failed; retrying")
                    await asyncio.sleep(1.0)
                if not busy:
                    self._wake.clear()
                    await asyncio.to_thread(self._wake.wait, idle)
        finally:
            await self.delivery.aclose()
