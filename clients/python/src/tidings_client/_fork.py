"""Give objects a fresh start in a child process after ``os.fork()``.

A forked child inherits copies of the parent's locks (possibly held by a thread that does
not exist in the child), sockets and SQLite handles shared with the parent, and queues whose
items the parent will deliver itself. Objects registered here get ``_after_fork_in_child()``
called in the child before any code of the host runs there, and may also define
``_before_fork()`` and ``_after_fork_in_parent()``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

__all__ = ["ForkAware", "register"]

logger = logging.getLogger("tidings_client")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_lock = threading.Lock()
_hooked = False


def _call_all(hook: str, objects: list[ForkAware]) -> None:
    for obj in objects:
        method = getattr(obj, hook, None)
        if method is None:
            continue
        try:
            method()
        except Exception:  # never raise into the host, least of all inside fork()
            logger.exception("tidings_client: %s of %r failed", hook.strip("_"), obj)


_forking: list[ForkAware] = []


def _before() -> None:
    # Keep the very objects prepared before the fork, for the hooks after it.
    with _lock:
        _forking[:] = list(_objects)
    _call_all("_before_fork", _forking)


def _after_in_parent() -> None:
    _call_all("_after_fork_in_parent", list(reversed(_forking)))
    _forking.clear()


def _after_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    objects = list(reversed(_forking)) or list(_objects)
    _forking.clear()
    _call_all("_after_fork_in_child", objects)


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked while ``obj`` lives."""
    global _hooked
    with _lock:
        if not _hooked and hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
            )
            _hooked = True
        _objects.add(obj)
