"""``BatchingClient``: ``track`` queues, a background thread sends batches.

The host is never hurt: ``track`` only appends to a bounded queue (or a local spool) and
returns; the sender thread never raises into the host; every event that is not delivered is
counted, logged on the ``tidings_client`` logger and passed to ``on_drop``; ``flush`` and
``close`` never wait longer than their timeout; the queue is flushed at interpreter exit; a
child process forked from the host starts with an empty queue of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec

import httpx

from . import _calls as calls
from . import _payloads as p
from ._base import ClientBase
from ._client import Client
from ._exceptions import TidingsConnectionError, TidingsError
from ._http import DEFAULT_TIMEOUT, connection_error, error_from_response
from ._ops import Track, as_method, named_methods
from ._queue import Dropped, DropReason, DropReporter, MemoryQueue
from ._retry import RetryPolicy, is_retryable, retry_after_of
from ._spool import Item, Spool, SpoolFullError

__all__ = ["BatchingClient"]

logger = logging.getLogger("tidings_client")

MAX_BATCH_BYTES = 950_000
"""Bodies per request stay under the server's 1 MB limit, with room for the brackets."""

_SPLIT_STATUSES = frozenset({400, 413, 422})
"""Answers that may be caused by one event of a batch: split the batch to find it."""

P = ParamSpec("P")


def _queued(
    spec: Callable[Concatenate[ClientBase[Any, Any], P], Track],
) -> Callable[Concatenate[BatchingClient, P], str]:
    """``track`` that queues the event and returns its ``message_id`` at once."""

    def track(self: BatchingClient, /, *args: P.args, **kwargs: P.kwargs) -> str:
        """Queue an event and return its ``message_id`` at once (see ``Client.track``)."""
        return self._enqueue(spec(self, *args, **kwargs))

    return as_method(track, spec, "str")


@named_methods
class BatchingClient(Client):
    """A ``Client`` whose ``track`` returns at once; events are sent in the background.

    ``track`` validates its arguments (``ValueError``/``TypeError`` for a bug in the calling
    code), queues the event and returns its ``message_id``; it never blocks on the network and
    never raises for a delivery problem. A daemon thread sends batches of up to ``batch_size``
    events to ``POST /api/client/events`` once ``batch_size`` are queued or ``flush_interval``
    seconds after the first, retrying 408, 429, 5xx and network failures per ``retry`` (same
    bytes, same ``message_id`` s, so nothing is stored twice). A batch refused with 400, 413
    or 422 is split to isolate the bad events, so one bad event does not sink 99 good ones.

    The other calls (``identify``, ``alias``, ``upsert_users``, …) are sent at once, as by
    ``Client``, and raise on failure.

    Every event that is not delivered is counted (``dropped``), logged on the
    ``tidings_client`` logger and passed to ``on_drop`` as a ``Dropped``.

    With ``spool_path``, events are committed to a local SQLite file before ``track`` returns
    and deleted only once the server acknowledged them: they survive a crash of the host and
    a server outage of any length (transient failures are retried for as long as it takes,
    ignoring ``retry.max_retries``), and are re-sent by the next client opening the file.

    ``close()`` (also run at interpreter exit) delivers what it can within
    ``shutdown_timeout`` seconds. After ``os.fork()`` the child starts with an empty queue
    and a sender of its own; the parent keeps delivering its own queue.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        convert_keys: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        retry: RetryPolicy | None = None,
        on_drop: Callable[[Dropped], object] | None = None,
        shutdown_timeout: float = 5.0,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_events: int = 1_000_000,
    ) -> None:
        if not 1 <= batch_size <= p.MAX_ITEMS:
            raise ValueError(f"batch_size must be between 1 and {p.MAX_ITEMS}")
        if max_queue_size < 1 or flush_interval < 0 or shutdown_timeout < 0:
            raise ValueError("max_queue_size must be >= 1, flush_interval and timeouts >= 0")
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            convert_keys=convert_keys,
            headers=headers,
            transport=transport,
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.send_retry = retry or RetryPolicy()
        self._on_drop = on_drop
        self._spool_poll = 1.0
        self._max_queue_size = max_queue_size
        self._spool = Spool(spool_path, max_events=spool_max_events) if spool_path else None
        self._released = False
        self._fresh_state()
        if self._spool is not None and self._spool.approximate_count():
            # Deliver what a previous run left behind; flush() waits for it too.
            self._hint = self._spool.approximate_count()
            self._last_seq = self._spool.last_seq()
            self._ensure_sender()
        _clients.add(self)
        # multiprocessing children end with os._exit(), skipping atexit: close from its own
        # exit hook instead.
        from multiprocessing import util as mp_util

        mp_util.register_after_fork(self, _close_at_multiprocessing_exit)

    def _fresh_state(self) -> None:
        self._cond = threading.Condition()
        self._interrupt = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue = MemoryQueue(self._max_queue_size)
        self._hint = 0
        self._last_seq = 0
        self._closing = False
        self._closed = False
        self._deadline: float | None = None
        self._flush_waiters = 0
        self._dropped = 0
        self._delivered = 0
        self._drops_at_flush = 0
        self._reporter = DropReporter(self._on_drop)
        self._backoff_wait: Callable[[float], None] = self._interruptible_wait

    # -- counters -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Events given up since the client started (in this process)."""
        return self._dropped

    @property
    def delivered(self) -> int:
        """Events the server acknowledged since the client started (in this process)."""
        return self._delivered

    @property
    def queued(self) -> int:
        """Events waiting to be sent: in memory, or in the spool (as last seen)."""
        if self._spool is not None:
            return self._spool.approximate_count()
        with self._cond:
            return len(self._queue) + len(self._queue._in_flight)

    # -- track ----------------------------------------------------------------------------

    def _enqueue(self, op: Track) -> str:
        mid, raw = op.message_id, op.event
        reason: DropReason | None = None
        error: TidingsError | None = None
        if self._closing:
            reason = DropReason.CLOSED
        elif self._spool is not None:
            try:
                item = self._spool.append(mid, raw)
            except SpoolFullError:
                reason = DropReason.SPOOL_FULL
            except Exception as exc:  # sqlite3.Error, OSError: never raise into the host
                reason, error = DropReason.SPOOL_ERROR, TidingsError(f"spool write failed: {exc}")
            else:
                with self._cond:
                    self._last_seq = max(self._last_seq, item.seq)
                    self._hint += 1
                    self._cond.notify_all()
        else:
            with self._cond:
                queued = self._queue.put(mid, raw)
                if queued is None:
                    reason = DropReason.QUEUE_FULL
                else:
                    self._last_seq = queued.seq
                    self._cond.notify_all()
        if reason is not None:
            with self._cond:
                self._dropped += 1
            self._report(reason, [Item(0, mid, raw)], error)
        else:
            self._ensure_sender()
        return mid

    track = _queued(calls.track)

    # -- flush and close ------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything queued so far; wait at most ``timeout`` seconds.

        Returns True when every event tracked before the call was delivered and none was
        dropped since the previous ``flush``; False on timeout or after a drop.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._ensure_sender()
        with self._cond:
            target = self._last_seq
            baseline = self._drops_at_flush
            self._flush_waiters += 1
            self._cond.notify_all()
        settled = False
        try:
            while True:
                settled = self._settled(target)
                remaining = deadline - time.monotonic()
                if settled or remaining <= 0:
                    break
                with self._cond:
                    if self._spool is None:
                        settled = self._queue.settled(target)
                        if settled:
                            break
                        self._cond.wait(remaining)
                    else:  # another process may deliver our rows: poll the file too
                        self._cond.wait(min(remaining, 0.05))
        finally:
            with self._cond:
                self._flush_waiters -= 1
                ok = settled and self._dropped == baseline
                self._drops_at_flush = self._dropped
        return ok

    def _settled(self, seq: int) -> bool:
        if self._spool is not None:
            try:
                return self._spool.settled(seq)
            except Exception:  # a closed spool: nothing more will be delivered
                return False
        with self._cond:
            return self._queue.settled(seq)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` (default ``shutdown_timeout``).

        Without a spool, events still queued then are dropped (reason ``shutdown``); with a
        spool they stay in the file for the next start. Idempotent; ``track`` afterwards drops.
        """
        budget = self.shutdown_timeout if timeout is None else max(0.0, timeout)
        with self._cond:
            closed = self._closed
        if closed:  # still log drops held back since (``track`` after ``close``, say)
            self._reporter.log_held_back()
            return
        with self._cond:
            if self._closed:
                return
            self._closing = True
            end = time.monotonic() + budget
            # The sender stops a little before the end, so that what it gives up on is
            # reported before close() returns.
            self._deadline = end - min(0.25, budget * 0.2)
            self._cond.notify_all()
            thread = self._thread
        self._interrupt.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, end - time.monotonic()))
        with self._cond:
            self._closed = True
            leftovers = self._queue.drain() if self._spool is None else []
            running = thread is not None and thread.is_alive()
            self._dropped += len(leftovers)
            self._cond.notify_all()
        if leftovers:
            self._report(DropReason.SHUTDOWN, leftovers, None)
        self._reporter.log_held_back()  # what the rate limit held back is logged, too
        if running:
            logger.warning(
                "tidings_client: a batch was still being sent when close() ran out of time"
            )
        else:
            self._release_resources()

    def _release_resources(self) -> None:
        with self._cond:
            if self._released:
                return
            self._released = True
        if self._spool is not None:
            try:
                self._spool.close()
            except Exception:
                logger.exception("tidings_client: closing the spool failed")
        super().close()

    # -- the sender thread ----------------------------------------------------------------

    def _ensure_sender(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._cond:
            if self._closing or (self._thread is not None and self._thread.is_alive()):
                return
            thread = threading.Thread(target=self._run, name="tidings-client-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # at interpreter shutdown
                logger.warning("tidings_client: cannot start the sender thread")
                return
            self._thread = thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    items = self._next_batch()
                    if items is None:
                        return
                    if items:
                        self._deliver(items)
                    self._reporter.log_held_back(due_only=True)
                except Exception:
                    logger.exception("tidings_client: sender error, continuing")
                    self._interruptible_wait(1.0)
                    if self._past_deadline():
                        return
        finally:
            if self._closed:
                self._reporter.log_held_back()  # drops settled after close() returned
                self._release_resources()

    def _pending_hint(self) -> int:
        return len(self._queue) if self._spool is None else self._hint

    def _next_batch(self) -> list[Item] | None:
        """Wait for a full batch, the flush interval, a flush() or close(); take a batch."""
        with self._cond:
            first_seen: float | None = None
            while True:
                pending = self._pending_hint()
                if pending == 0:
                    if self._closing:
                        break
                    first_seen = None
                    if self._spool is None:
                        # Idle: wake up when drops held back by the log's rate limit are due.
                        due = self._reporter.due_in()
                        if due is not None and due <= 0:
                            return []  # _run logs them, outside the lock
                        self._cond.wait(due)
                    elif not self._cond.wait(self._spool_poll):
                        break  # look for rows freed by other processes
                    continue
                if self._closing or self._flush_waiters or pending >= self.batch_size:
                    break
                now = time.monotonic()
                first_seen = now if first_seen is None else first_seen
                remaining = first_seen + self.flush_interval - now
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._spool is None:
                items = self._queue.take(self.batch_size, MAX_BATCH_BYTES)
                return None if not items and self._closing else items
        if self._past_deadline():
            return None
        items = self._spool.take(self.batch_size, MAX_BATCH_BYTES)
        with self._cond:
            self._hint = self._hint - len(items) if len(items) == self.batch_size else 0
            self._hint = max(0, self._hint)
            if not items and self._closing:
                return None
        return items

    def _deliver(self, items: list[Item]) -> None:
        retries = 0
        while True:
            if self._past_deadline():
                self._settle(items, DropReason.SHUTDOWN, None)
                return
            error = self._post(items)
            if error is None:
                self._settle(items, None, None)
                return
            if not is_retryable(error):
                if error.status in _SPLIT_STATUSES and len(items) > 1:
                    half = len(items) // 2
                    self._deliver(items[:half])
                    self._deliver(items[half:])
                else:
                    self._settle(items, DropReason.REJECTED, error)
                return
            if self._spool is None and not self.send_retry.should_retry(retries, error):
                self._settle(items, DropReason.RETRIES_EXHAUSTED, error)
                return
            if not self._past_deadline():
                self._backoff_wait(self.send_retry.delay(retries, retry_after_of(error)))
            if self._past_deadline():
                self._settle(items, DropReason.SHUTDOWN, error)
                return
            retries += 1
            if self._spool is not None:
                self._spool.renew(items)

    def _post(self, items: list[Item]) -> TidingsError | None:
        content = b"[" + b",".join(item.body for item in items) + b"]"
        extra: dict[str, Any] = {}
        if self._deadline is not None:
            extra["timeout"] = max(0.01, self._deadline - time.monotonic())
        try:
            response = self._http.post(
                self._base_url + "/events", content=content, headers=self._headers, **extra
            )
        except httpx.RequestError as exc:
            return connection_error(exc)
        except Exception as exc:  # a broken custom transport must not kill the sender
            error = TidingsConnectionError(f"transport failed: {exc!r}")
            error.__cause__ = exc
            return error
        if response.is_success:
            return None
        return error_from_response(response)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _interruptible_wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, cut short at the close() deadline."""
        end = time.monotonic() + delay
        while True:
            now = time.monotonic()
            remaining = end - now
            if self._deadline is not None:
                remaining = min(remaining, self._deadline - now)
            if remaining <= 0:
                return
            self._interrupt.wait(remaining)
            self._interrupt.clear()

    def _settle(
        self, items: list[Item], reason: DropReason | None, error: TidingsError | None
    ) -> None:
        if self._spool is not None:
            if reason is DropReason.SHUTDOWN:  # kept on disk for the next start
                self._spool.release(items)
                with self._cond:
                    self._cond.notify_all()
                return
            self._spool.remove(items)
        if reason is not None:
            # Report before the items count as settled, so a flush() that returns has seen
            # every on_drop call for the events it waited for.
            with self._cond:
                self._dropped += len(items)
            self._report(reason, items, error)
        with self._cond:
            if self._spool is None:
                self._queue.done(items)
            if reason is None:
                self._delivered += len(items)
            self._cond.notify_all()

    def _report(self, reason: DropReason, items: list[Item], error: TidingsError | None) -> None:
        with self._cond:
            total = self._dropped
        if self._reporter.report(reason, items, error, total):
            with self._cond:  # a count is held back: an idle sender logs it once it is due
                self._cond.notify_all()

    # -- fork -----------------------------------------------------------------------------

    def _before_fork(self) -> None:
        if self._spool is not None:
            self._spool._before_fork()

    def _after_fork_in_parent(self) -> None:
        if self._spool is not None:
            self._spool._after_fork_in_parent()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        closing, closed = self._closing, self._closed
        # The parent delivers what it had queued; the child starts empty, with its own thread.
        self._fresh_state()
        self._closing, self._closed = closing, closed
        if self._spool is not None:
            self._spool._after_fork_in_child()


_clients: weakref.WeakSet[BatchingClient] = weakref.WeakSet()
"""Every client alive, closed or not: at exit the open ones are closed, and all of them log
the drops their log's rate limit held back."""


def _close_at_multiprocessing_exit(client: BatchingClient) -> None:
    from multiprocessing import util as mp_util

    mp_util.Finalize(client, client.close, exitpriority=10)


@atexit.register
def _close_at_exit() -> None:
    for client in list(_clients):
        try:
            client.close()
        except Exception:  # never raise into the host's shutdown
            logger.exception("tidings_client: closing at exit failed")
