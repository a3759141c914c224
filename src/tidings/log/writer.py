"""The log writer: plain appends to SQLite's log file, from a process of its own.

A thread in the API process (the group committer) shares the interpreter lock with the
event loop: each of its calls into SQLite lets go of the lock and then waits for the
loop to hand it back, and under load that wait (0.5-1.5 ms) was most of each commit
while requests queued behind it (docs/design.md, "The log writer process").

Here the event loop sends each turn's appends down a pipe, as one frame, without
waiting; the child reads every frame waiting in the pipe, commits them in one
transaction (``synchronous=FULL``: an fsync) and answers with how many frames it made
durable. The loop resolves their requests when that answer arrives: nothing is
acknowledged before its commit returned, as before. Only plain appends (no
``Idempotency-Key``, no positions asked for: nearly every request) come here; the rest
still go through the group committer's thread, which stores their idempotency records
in the same transaction.

Frames both ways are a 4-byte little-endian length and MessagePack: to the child, a list
of ``ingest_log`` rows; to the parent, ``[frames, error kind or None, message]``. The
child runs in a process group of its own (a Ctrl-C at the terminal reaches the server
only), ignores SIGINT and SIGTERM (the server still answers its last requests), and exits
when its input closes: when the server stops, or dies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from tidings.domain.errors import ServiceUnavailable
from tidings.domain.ingest import LogEntry
from tidings.log.committer import FullDiskLog, storage_full, storage_full_error
from tidings.log.database import DirectAppender, Row, entry_rows

__all__ = ["LogWriterProcess", "main"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode
_PIPE_SIZE = 1 << 20  # bytes a pipe holds (Linux); one frame of 100 events is ~30 KB
_READ_SIZE = 1 << 20
_RESTART_AFTER = 1.0  # seconds between starts of a child that keeps dying

_Batch = list[tuple[asyncio.Future[None], int]]  # the requests of one frame, and their sizes


# ---------------------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------------------


def _frames(buffer: bytearray) -> list[bytes]:
    """The complete frames at the start of ``buffer``, removed from it."""
    frames: list[bytes] = []
    start = 0
    while len(buffer) - start >= 4:
        (size,) = _HEADER.unpack_from(buffer, start)
        if len(buffer) - start - 4 < size:
            break
        frames.append(bytes(buffer[start + 4 : start + 4 + size]))
        start += 4 + size
    del buffer[:start]
    return frames


def _answer(fd: int, frames: int, kind: str | None, message: str = "") -> None:
    body = _pack([frames, kind, message])
    data = _HEADER.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tidings.log.writer [--synchronous FULL] URL``: serve the parent."""
    parser = argparse.ArgumentParser(prog="tidings.log.writer")
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL", "EXTRA"))
    parser.add_argument("url")
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    source, sink = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    appender = DirectAppender.open(args.url, sqlite_synchronous=args.synchronous)
    try:
        try:
            appender.connect()
        except Exception as exc:
            logger.exception("the log writer cannot open the ingest log")
            _answer(sink, 0, "error", f"cannot open the ingest log: {exc}")
            return 1
        _answer(sink, 0, None, "ready")
        buffer = bytearray()
        while True:
            chunk = os.read(source, _READ_SIZE)
            if not chunk:
                return 0  # the server closed the pipe (stopping) or is gone
            buffer += chunk
            frames = _frames(buffer)
            if not frames:
                continue
            rows: list[Any] = []
            for frame in frames:
                rows.extend(_unpack(frame))
            try:
                appender(rows)
            except Exception as exc:
                full = storage_full(exc)
                if not full:
                    logger.exception("ingest log append failed")
                answer: tuple[str | None, str] = ("full" if full else "error", str(exc))
            else:
                answer = (None, "")
            try:
                _answer(sink, len(frames), *answer)
            except BrokenPipeError:
                return 0  # the server is gone: nobody is waiting for the answer
    finally:
        appender.close()


# ---------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------


class LogWriterProcess:
    """The API side: ``append`` from the event loop; one child process at a time,
    started again (at most once a second) if it dies."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        max_queued_items: int = 200_000,
    ) -> None:
        self.url = url
        self.synchronous = sqlite_synchronous
        self.max_queued = max_queued_items
        # Set by the group committer that owns it: the same hook and disk-full log.
        self.on_commit: Callable[[], None] | None = None
        self.commits = 0
        self.committed_items = 0
        self.starts = 0
        self.full_disk = FullDiskLog()
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching: tuple[int, int] | None = None  # (stdout, stdin) fds the loop watches
        self._pending: _Batch = []  # not sent yet
        self._pending_rows: list[Row] = []
        self._sent: collections.deque[_Batch] = collections.deque()  # sent, not answered
        self._queued = 0
        self._out = bytearray()
        self._in = bytearray()
        self._flush_scheduled = False
        self._restart: asyncio.TimerHandle | None = None
        self._started_at = float("-inf")
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._spawn()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        self._restart = None
        self.starts += 1
        self._started_at = time.monotonic()
        command = [sys.executable, "-m", "tidings.log.writer"]
        proc = subprocess.Popen(
            [*command, "--synchronous", self.synchronous, self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            # A group of its own: a Ctrl-C at the terminal reaches the server, which stops
            # the child, and not the child itself (in its first half second, still
            # importing, it would print a traceback).
            process_group=0,
        )
        assert proc.stdin is not None and proc.stdout is not None
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, AttributeError):  # Linux only; a hint
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            os.set_blocking(pipe.fileno(), False)
        self._proc = proc
        self._in.clear()
        self._out.clear()
        if self._loop is not None:
            self._watch()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the child's input and wait for it to exit. Requests still waiting (the
        server waits for its requests before it stops, so normally none) hear a 503."""
        self._stopping = True
        self._unwatch()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        proc, self._proc = self._proc, None
        if proc is not None:
            self._finish(proc, time.monotonic() + timeout)
        error = ServiceUnavailable("The server is shutting down; retry shortly.")
        self._fail([*self._sent, self._pending], error)
        self._sent.clear()
        self._pending, self._pending_rows, self._queued = [], [], 0

    def _finish(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Send what is queued, close the child's input, and settle what it answers for
        before it exits (it commits everything it read first)."""
        assert proc.stdin is not None and proc.stdout is not None
        if self._pending:
            self._frame_pending()
        try:
            os.set_blocking(proc.stdin.fileno(), True)
            while self._out:
                del self._out[: os.write(proc.stdin.fileno(), self._out)]
        except OSError:  # gone: what it did not answer for hears a 503
            self._out.clear()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        while self._sent and (left := deadline - time.monotonic()) > 0:
            if not select.select([proc.stdout], [], [], left)[0]:
                break
            try:
                chunk = os.read(proc.stdout.fileno(), _READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break
            self._answered(chunk)
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    # -- appending ---------------------------------------------------------------------------

    async def append(self, entries: list[LogEntry]) -> None:
        """Return once ``entries`` are committed to the log; ServiceUnavailable otherwise."""
        if not entries:
            return
        if self._stopping:
            raise ServiceUnavailable("The server is shutting down; retry shortly.")
        rows = entry_rows(entries)
        size = len(rows)
        if self._queued + size > self.max_queued:
            raise ServiceUnavailable("The ingest log is saturated; retry shortly.")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((future, size))
        self._pending_rows.extend(rows)
        self._queued += size
        if not self._flush_scheduled:
            # After the handlers that are ready in this turn of the loop: one frame
            # carries all of them.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await future

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the requests of ``loop`` (a server has one; a test may start another)."""
        self._unwatch()
        self._loop = loop
        self._flush_scheduled = False
        if self._proc is not None:
            self._watch()

    def _watch(self) -> None:
        assert self._loop is not None and self._proc is not None
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._watching = (self._proc.stdout.fileno(), self._proc.stdin.fileno())
        self._loop.add_reader(self._watching[0], self._readable)

    def _unwatch(self) -> None:
        if self._loop is not None and self._watching is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._watching[0])
                self._loop.remove_writer(self._watching[1])
        self._watching = None

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._proc is None:
            return  # nothing to send, or no child: sent once one is started
        self._frame_pending()
        self._writable()

    def _frame_pending(self) -> None:
        """Move the pending requests into a frame in the output buffer."""
        frame = _pack(self._pending_rows)
        self._sent.append(self._pending)
        self._pending, self._pending_rows = [], []
        self._out += _HEADER.pack(len(frame))
        self._out += frame

    def _writable(self) -> None:
        if self._watching is None or self._loop is None:
            return
        stdin = self._watching[1]
        try:
            written = os.write(stdin, self._out)
        except BlockingIOError:
            written = 0
        except OSError:  # the child is gone; its output's end says so too
            self._loop.remove_writer(stdin)
            return
        del self._out[:written]
        if self._out:
            self._loop.add_writer(stdin, self._writable)
        else:
            self._loop.remove_writer(stdin)

    def _readable(self) -> None:
        assert self._watching is not None
        try:
            chunk = os.read(self._watching[0], _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._died()
            return
        self._answered(chunk)

    def _answered(self, chunk: bytes) -> None:
        """Settle the requests of the frames the child answered for in ``chunk``."""
        self._in += chunk
        for frame in _frames(self._in):
            count, kind, message = _unpack(frame)
            if count == 0:
                if kind is not None:
                    logger.error("the log writer process failed to start: %s", message)
                continue
            batches = [self._sent.popleft() for _ in range(count)]
            self._queued -= sum(size for batch in batches for _, size in batch)
            if kind is None:
                self.commits += 1
                self.committed_items += sum(size for batch in batches for _, size in batch)
                for batch in batches:
                    for future, _ in batch:
                        if not future.done():
                            future.set_result(None)
                if self.on_commit is not None:
                    self.on_commit()
                continue
            if kind == "full":
                self.full_disk.failed()
                error = storage_full_error()
            else:  # the child logged it, with its traceback
                error = ServiceUnavailable("The ingest log could not be written; retry shortly.")
            self._fail(batches, error)

    def _died(self) -> None:
        """The child exited: what it had not answered for may or may not be written, so
        those requests hear a 503 (a retry is safe for events with a ``message_id``);
        what was never sent waits for the next child."""
        self._unwatch()
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(5)
            assert proc.stdin is not None and proc.stdout is not None
            for pipe in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._stopping:
            return
        logger.error("the log writer process exited (%s); starting another", code)
        self._fail(
            list(self._sent),
            ServiceUnavailable(
                "The ingest log writer stopped before confirming the write; retry shortly."
            ),
        )
        self._queued -= sum(size for batch in self._sent for _, size in batch)
        self._sent.clear()
        assert self._loop is not None
        wait = self._started_at + _RESTART_AFTER - time.monotonic()
        self._restart = self._loop.call_later(max(0.0, wait), self._respawn)

    def _respawn(self) -> None:
        if self._stopping:
            return
        try:
            self._spawn()
        except OSError:
            logger.exception("cannot start the log writer process; retrying")
            assert self._loop is not None
            self._restart = self._loop.call_later(_RESTART_AFTER, self._respawn)
            return
        self._flush()

    @staticmethod
    def _fail(batches: list[_Batch], error: BaseException) -> None:
        for batch in batches:
            for future, _ in batch:
                if not future.done():
                    future.set_exception(error)


if __name__ == "__main__":
    sys.exit(main())
