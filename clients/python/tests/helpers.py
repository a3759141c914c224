"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable


def run_in_child(body: Callable[[], None], timeout: float = 30.0) -> int:
    """Fork; run ``body`` in the child; return its exit status (0 when ``body`` returned).

    The child never returns into pytest: it leaves through ``os._exit``. A child still
    running after ``timeout`` seconds is killed and counts as failed.
    """
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)  # polling a child, not timing an assertion


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
