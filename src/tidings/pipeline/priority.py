"""The worker's CPU priority: the scheduler's idle class while it keeps up.

On a machine it shares with the API, a worker that competes for the cores slows the
acknowledgements down (each request waits for the API's and the log writer's turns on a
core). Ingestion comes first: the log absorbs a burst, and the worker applies it from the
cycles nobody else wants (``SCHED_IDLE``, Linux). So that the log cannot grow without
bound when the cores stay busy, the worker competes again, at its normal priority, as
soon as the oldest entry it is applying waited longer than ``lag`` seconds, and goes
back to the idle class once it has caught up with a younger backlog.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["IdlePriority"]

logger = logging.getLogger(__name__)


class IdlePriority:
    """Switches the calling thread between ``SCHED_IDLE`` and ``SCHED_OTHER``.

    ``update`` is called by the consumer's thread after each read of the log with the
    age (seconds) of the oldest entry read, or None when it read nothing, and whether
    the read reached the log's head.
    """

    def __init__(self, lag: float) -> None:
        self.lag = lag
        self.idle: bool | None = None  # unknown until the first update
        self.switches = 0
        self.failed = False

    @staticmethod
    def supported() -> bool:
        """Whether a thread here may enter the idle class and leave it again.

        Leaving it takes CAP_SYS_NICE, or an RLIMIT_NICE that allows the thread's nice
        value: a worker that could enter but not leave would never compete again. So a
        throwaway thread tries both (the class belongs to the thread that sets it)."""
        if not (hasattr(os, "SCHED_IDLE") and hasattr(os, "sched_setscheduler")):
            return False
        result: list[bool] = []

        def probe() -> None:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                result.append(False)
            else:
                result.append(True)

        thread = threading.Thread(target=probe, name="tidings-priority-probe")
        thread.start()
        thread.join()
        if not result[0]:
            logger.info(
                "the worker keeps its normal CPU priority: this process may not leave the "
                "idle scheduling class once in it (no CAP_SYS_NICE, RLIMIT_NICE too low)"
            )
        return result[0]

    def update(self, oldest_age: float | None, caught_up: bool) -> None:
        if self.failed:
            return
        if oldest_age is not None and oldest_age > self.lag:
            self._set(idle=False)
        elif caught_up:
            self._set(idle=True)

    def _set(self, *, idle: bool) -> None:
        if idle == self.idle:
            return
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError as exc:  # supported() said it could; log it (once) and stay put
            logger.error("cannot change the worker's CPU scheduling class: %s", exc)
            self.failed = True
            return
        if self.idle is not None:
            logger.info(
                "worker %s",
                "caught up: back to idle CPU priority"
                if idle
                else f"more than {self.lag:g} s behind: competing for the CPU",
            )
        self.idle = idle
        self.switches += 1
