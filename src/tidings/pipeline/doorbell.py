"""How `tidings serve` wakes its worker child, only when the child sleeps.

A worker child that finds nothing new in the log keeps polling its head every
``TIDINGS_WORKER_POLL_INTERVAL`` (5 ms) for ``TIDINGS_WORKER_IDLE_AFTER`` seconds; then it
*dozes*: it raises a flag in a byte of memory shared with `serve`, looks at the log once
more, and waits on a pipe (at most ``Consumer.sleep_wait`` seconds, for appends from other
processes). `serve` looks at the flag after each commit to the log (a memory read, no
system call) and, when it is raised, lowers it and writes one byte to the pipe. So while
the worker is busy, or was busy moments ago, nothing changes from plain polling (a wake-up
pipe written after every commit cost single-event throughput: docs/benchmarks.md), and an
idle server costs next to nothing while the first entry after a pause is still applied at
once.

The flag and the pipe are plain file descriptors, handed to the child with ``pass_fds``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading

__all__ = ["Doorbell"]


class Doorbell:
    def __init__(self, pipe_fd: int, flag_fd: int, *, owner: bool) -> None:
        self.pipe_fd = pipe_fd  # the parent's write end, the child's read end
        self.flag_fd = flag_fd
        self._flag = mmap.mmap(flag_fd, 1)
        self._owner = owner
        self._child_fds: tuple[int, int] | None = None

    @classmethod
    def create(cls) -> Doorbell:
        """The parent's side: a pipe and a shared flag, both for the children it starts."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # full: the child has a wake-up pending anyway
        with tempfile.TemporaryFile() as flag_file:  # unlinked at once; the fd lives on
            flag_fd = os.dup(flag_file.fileno())
        os.ftruncate(flag_fd, 1)
        bell = cls(write_fd, flag_fd, owner=True)
        bell._child_fds = (read_fd, flag_fd)
        return bell

    @property
    def child_fds(self) -> tuple[int, int]:
        """(pipe read end, flag) to pass to a child: ``Doorbell.attach(*child_fds)`` there."""
        assert self._child_fds is not None, "only the parent's side has them"
        return self._child_fds

    @classmethod
    def attach(cls, pipe_fd: int, flag_fd: int) -> Doorbell:
        """The child's side, from the descriptors its parent passed."""
        return cls(pipe_fd, flag_fd, owner=False)

    # -- the parent's side ---------------------------------------------------------------

    def ring(self) -> None:
        """After a commit: wake the child if it dozes (cheap when it does not)."""
        if self._flag[0]:
            self._flag[0] = 0
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                os.write(self.pipe_fd, b"\0")

    # -- the child's side ----------------------------------------------------------------

    def dozing(self, value: bool) -> None:
        """Raise (or lower) the flag: the parent rings after its next commit."""
        self._flag[0] = 1 if value else 0

    def listen(self, wake: threading.Event) -> threading.Thread:
        """Set ``wake`` whenever the parent rings, in a daemon thread; it ends when the
        parent's end of the pipe is closed."""

        def run() -> None:
            while True:
                try:
                    data = os.read(self.pipe_fd, 4096)
                except OSError:
                    return
                if not data:
                    return
                wake.set()

        thread = threading.Thread(target=run, name="tidings-doorbell", daemon=True)
        thread.start()
        return thread
