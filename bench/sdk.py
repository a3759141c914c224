"""Python SDK benchmark: events/s the ``BatchingClient`` pushes into a local Tidings server.

    .venv/bin/python bench/sdk.py [--events N] [--repeats R] [--quick] [--json PATH]

In one run it starts four fresh Tidings servers (``tidings migrate``, ``project create
--json``, ``serve``; each on its own new SQLite database in a temp dir), one per kind of
measurement, and pushes ``--events`` events (default 50,000) into each, in rounds:

(a) ``BatchingClient`` without a spool: time from the first ``track`` until ``flush()``
    returns True, and the host thread's time inside ``track`` per event;
(b) ``BatchingClient(spool_path=...)`` (a fresh temp file per run): the same figures;
(c) the reference: ``segment-analytics-python`` (``segment.analytics.Client``, from PyPI)
    pushing the same events into Tidings' Segment endpoint ``POST /v1/batch`` (write key =
    the project's public key): the same figures, from the first ``track`` until its
    ``flush()`` (``queue.join()``) would return, waited for with a deadline;
(d) a second reference: one ``httpx.Client`` posting pre-built 100-event JSON arrays to
    ``POST /api/client/events`` one after the other, the fastest one Python thread pushes
    through Tidings' own endpoint.

The kinds alternate within each round (order rotated per round), so noise from the shared
machine hits all of them alike; the medians of the repeats and the medians of the per-round
ratios to (c) and to (d) are reported. After every run the harness waits (bounded) until
``/api/health`` reports ``log_lag`` 0 and then counts the rows of ``events`` in the server's
database: the count must grow by exactly what was sent (every event has its own
``message_id`` / ``messageId``). Both SDKs get ``max_queue_size`` = ``--events`` by default,
so neither drops a burst for a full queue. Every process it starts is stopped in the end;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

try:
    from tidings_client import BatchingClient, Dropped
except ImportError:  # pragma: no cover - a hint rather than a traceback
    raise SystemExit(
        "tidings_client is not importable: run with the project's venv "
        "(.venv/bin/python bench/sdk.py) or `pip install -e clients/python`"
    ) from None

try:
    from segment.analytics import Client as SegmentClient
    from segment.analytics import request as segment_request
except ImportError:  # pragma: no cover
    raise SystemExit(
        "segment-analytics-python is not importable: run with the project's venv "
        "(.venv/bin/python bench/sdk.py) or `pip install segment-analytics-python`"
    ) from None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

INGEST_PATH = "/api/client/events"
HEALTH_PATH = "/api/health"
WARMUP_EVENTS = 200  # per run, before the clock starts: connection, key cache, code paths
EVENTS_PER_USER = 10
NAMES = ("Order placed", "Page viewed", "Added to cart", "Signed up", "Checkout started")

KINDS = ("sdk", "spool", "segment", "httpx")
TRACKING_KINDS = ("sdk", "spool", "segment")  # the SDKs: timed from the first track()
LETTERS = {"sdk": "a", "spool": "b", "segment": "c", "httpx": "d"}
LABELS = {
    "sdk": "BatchingClient",
    "spool": "BatchingClient + spool",
    "segment": "segment-analytics-python → /v1/batch",
    "httpx": "httpx loop (2nd reference)",
}
LABEL_WIDTH = max(len(v) for v in LABELS.values())


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    events: int
    repeats: int
    batch_size: int
    queue_size: int
    flush_timeout: float
    drain_timeout: float
    env: dict[str, str]
    keep: bool
    json_out: Path | None
    quick: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        description=(
            "Tidings Python SDK benchmark (BatchingClient vs segment-analytics-python into "
            "/v1/batch, and vs a plain httpx loop)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="1 repeat of 10,000 events (~20 s)")
    p.add_argument("--events", type=int, help="events per run (default 50,000; quick 10,000)")
    p.add_argument("--repeats", type=int, help="rounds; medians reported (default 3; quick 1)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="events per request (max 100); the Segment SDK's upload_size",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        help=(
            "max_queue_size of both SDKs, BatchingClient and segment-analytics-python "
            "(default: --events, so a burst is never dropped)"
        ),
    )
    p.add_argument("--flush-timeout", type=float, default=120.0, help="flush() budget, s")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="max wait for log_lag 0")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="server env var")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (dbs, logs, spools)")
    p.add_argument("--json", dest="json_out", type=Path, help="also write the results as JSON")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    events = a.events if a.events is not None else (10_000 if quick else 50_000)
    if events < 1:
        p.error("--events must be >= 1")
    if not 1 <= a.batch_size <= 100:
        p.error("--batch-size must be between 1 and 100")
    env: dict[str, str] = {}
    for item in a.env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return Options(
        events=events,
        repeats=max(1, a.repeats if a.repeats is not None else (1 if quick else 3)),
        batch_size=a.batch_size,
        queue_size=max(1, a.queue_size if a.queue_size is not None else events),
        flush_timeout=a.flush_timeout,
        drain_timeout=a.drain_timeout,
        env=env,
        keep=bool(a.keep),
        json_out=a.json_out,
        quick=quick,
    )


# --------------------------------------------------------------------------------------------
# processes and /proc
# --------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group this harness started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def group_cpu(pgid: int) -> float:
    """User+system CPU seconds of every live process in process group ``pgid``."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime/stime are fields 14/15.
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (user, nice, system, irq, softirq)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        return sum(int(first[i]) for i in (1, 2, 3, 6, 7)) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Server:
    """One ``tidings serve`` on its own database; ``sent`` counts what was pushed into it."""

    kind: str
    workdir: Path
    db: Path
    base_url: str
    public_key: str
    proc: subprocess.Popen[bytes]
    log: Path
    sent: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"`tidings {' '.join(args)}` failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def start_server(kind: str, root: Path, extra_env: dict[str, str]) -> Server:
    """migrate, project create, serve on a free port; returns once /api/health answers 200."""
    workdir = root / kind
    workdir.mkdir()
    db = workdir / "tidings.db"
    # cwd is the temp dir, so that no .env of the checkout leaks into the settings.
    env = {**os.environ, **extra_env, "TIDINGS_DATABASE_URL": f"sqlite:///{db}"}
    _cli(env, workdir, "migrate")
    out = _cli(env, workdir, "project", "create", "--name", "bench", "--json")
    line = next((ln for ln in reversed(out.splitlines()) if ln.strip().startswith("{")), "")
    try:
        public_key = str(json.loads(line)["public_key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"unexpected `project create --json` output:\n{out}") from exc
    port = free_port()
    log = workdir / "serve.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(kind, workdir, db, f"http://127.0.0.1:{port}", public_key, proc, log)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(HEALTH_PATH).status_code == 200:
                        return server
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after 60 s:\n{tail(log)}")
                time.sleep(0.1)
    except BaseException:
        stop_process(proc)
        raise


def wait_lag_zero(server: Server, timeout: float) -> tuple[bool, float]:
    """Poll ``log_lag`` until it is 0; (drained, seconds waited)."""
    t0 = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, TypeError):
                r = client.get(HEALTH_PATH)
                if r.status_code == 200 and r.json().get("log_lag") == 0:
                    return True, time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return False, time.monotonic() - t0
            time.sleep(0.1 if time.monotonic() - t0 < 2.0 else 0.25)


def count_events(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return int(c.execute("SELECT count(*) FROM events").fetchone()[0])


# --------------------------------------------------------------------------------------------
# the events
# --------------------------------------------------------------------------------------------

EventArgs = tuple[str, dict[str, Any], str]  # name, properties, external_id


def make_events(prefix: str, n: int) -> list[EventArgs]:
    """``n`` realistic events (~200 bytes of properties), ``EVENTS_PER_USER`` per user."""
    users = max(1, n // EVENTS_PER_USER)
    out: list[EventArgs] = []
    for i in range(n):
        props = {
            "total": (i % 500) + (i % 100) / 100,
            "currency": "EUR",
            "items": i % 7 + 1,
            "sku": f"SKU-{(i * 7919) % 1_000_000:06d}",
            "coupon": "SPRING24",
            "channel": "web",
            "page": "/checkout/confirm",
            "utm_source": "newsletter",
            "utm_campaign": "spring-sale",
            "session": f"s_{prefix}_{i // 5:08d}",
        }
        out.append((NAMES[i % len(NAMES)], props, f"u_{prefix}_{i % users}"))
    return out


def make_bodies(events: Sequence[EventArgs], batch: int) -> list[bytes]:
    """The same JSON the SDK sends (same keys, same order, a uuid4 ``message_id`` each)."""
    bodies = []
    for start in range(0, len(events), batch):
        items = [
            {"name": name, "external_id": ext, "data": props, "message_id": uuid.uuid4().hex}
            for name, props, ext in events[start : start + batch]
        ]
        bodies.append(json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode())
    return bodies


class CountingTransport(httpx.BaseTransport):
    """``httpx.HTTPTransport()`` that counts requests and answers (used by both sides)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests = 0
        self.body_bytes = 0
        self.statuses: Counter[int] = Counter()
        self.failures = 0

    def reset(self) -> None:
        self.requests = self.body_bytes = self.failures = 0
        self.statuses = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.body_bytes += int(request.headers.get("content-length") or 0)
        try:
            response = self._inner.handle_request(request)
        except Exception:
            self.failures += 1
            raise
        self.statuses[response.status_code] += 1
        return response

    def close(self) -> None:
        self._inner.close()


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    round: int
    events: int
    delivered: int = 0  # of ``events``, acknowledged by the server (timed part)
    seconds: float = 0.0  # first track/post until flush() returned True / last answer
    ok: bool = False  # flush() returned True / every request answered 2xx
    loop_seconds: float = 0.0  # the host's track loop alone (SDK kinds)
    delivered_in_loop: int = 0  # events acknowledged by the end of the track loop
    track_us_mean: float = 0.0  # wall time inside track() per event
    track_us_p50: float = 0.0
    track_us_p99: float = 0.0
    track_us_max: float = 0.0
    track_cpu_us: float = 0.0  # host thread CPU in the loop, per event
    client_cpu_us: float = 0.0  # whole client process CPU (all threads), per event
    build_cpu_us: float = 0.0  # httpx: building the bodies (uuid4 + json.dumps), per event
    server_cores: float = 0.0
    server_cpu_us: float = 0.0  # the server's CPU per event
    rest_cores: float = 0.0  # everything else on the machine
    requests: int = 0
    request_bytes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    drain_seconds: float = 0.0  # after the run, until log_lag 0
    drained: bool = False
    stored: int = -1  # rows added to `events` by this run (warm-up included)
    expected: int = 0
    stored_total: int = -1
    expected_total: int = 0

    @property
    def events_per_s(self) -> float:
        """Delivered events per second (events the client dropped do not count)."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def stored_ok(self) -> bool:
        return self.stored == self.expected and self.stored_total == self.expected_total


class Meter:
    """CPU of this process and of the server, and the machine's busy time, over a span."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.server0 = group_cpu(server_pid)
        self.busy0 = machine_busy()

    def finish(self, run: Run) -> None:
        wall = time.monotonic() - self.t0
        client = time.process_time() - self.cpu0
        server = group_cpu(self.server_pid) - self.server0
        busy = machine_busy() - self.busy0
        run.client_cpu_us = client / run.events * 1e6
        run.server_cpu_us = server / run.events * 1e6
        if wall > 0:
            run.server_cores = server / wall
            run.rest_cores = max(0.0, (busy - server - client) / wall)


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def run_sdk(server: Server, o: Options, rnd: int, spool: bool, workdir: Path) -> Run:
    kind = "spool" if spool else "sdk"
    run = Run(kind, rnd, o.events)
    prefix = f"r{rnd}{kind}"
    warm = make_events(prefix + "w", WARMUP_EVENTS)
    events = make_events(prefix, o.events)
    drops: list[int] = []

    def on_drop(dropped: Dropped) -> None:
        drops.append(len(dropped))

    transport = CountingTransport()
    spool_path = workdir / f"spool-{prefix}.db" if spool else None
    client = BatchingClient(
        server.public_key,
        base_url=server.base_url,
        batch_size=o.batch_size,
        max_queue_size=o.queue_size,
        on_drop=on_drop,
        transport=transport,
        spool_path=spool_path,
    )
    try:
        for name, props, ext in warm:
            client.track(name, props, external_id=ext)
        warm_ok = client.flush(timeout=30)
        warm_dropped = sum(drops)
        server.sent += WARMUP_EVENTS - warm_dropped
        wait_lag_zero(server, o.drain_timeout)
        transport.reset()
        delivered0 = client.delivered
        durations = [0] * o.events
        track = client.track
        clock = time.perf_counter_ns
        meter = Meter(server.pid)
        thread0 = time.thread_time()
        t0 = clock()
        for i, (name, props, ext) in enumerate(events):
            s = clock()
            track(name, props, external_id=ext)
            durations[i] = clock() - s
        t_loop = clock()
        thread_cpu = time.thread_time() - thread0
        run.delivered_in_loop = client.delivered - delivered0
        run.ok = client.flush(timeout=o.flush_timeout) and warm_ok
        t_end = clock()
        meter.finish(run)
        run.delivered = client.delivered - delivered0
    finally:
        client.close(timeout=5.0)
    # What the client dropped (queue_full with a small --queue-size, or left at close() after
    # a flush() timeout) is not expected on the server; flush() returned False for it.
    run.dropped = sum(drops)
    run.expected = WARMUP_EVENTS + o.events - run.dropped
    server.sent += o.events - (run.dropped - warm_dropped)
    run.seconds = (t_end - t0) / 1e9
    run.loop_seconds = (t_loop - t0) / 1e9
    durations.sort()
    run.track_us_mean = sum(durations) / len(durations) / 1e3
    run.track_us_p50 = _percentile(durations, 0.50) / 1e3
    run.track_us_p99 = _percentile(durations, 0.99) / 1e3
    run.track_us_max = durations[-1] / 1e3
    run.track_cpu_us = thread_cpu / o.events * 1e6
    run.requests = transport.requests
    run.request_bytes = transport.body_bytes
    run.statuses = {str(k): v for k, v in sorted(transport.statuses.items())}
    return run


class SegmentCounter:
    """Counts what ``segment-analytics-python`` sends and what it gives up on.

    The SDK posts with ``requests`` through one module-level session
    (``segment.analytics.request._session``); a response hook on it counts the answers
    (attached for one run, removed after). Events the SDK gives up on are reported to
    ``on_error(exc, batch)`` (a 4xx other than 408/410/429/460, retries or the backoff budget
    exhausted, no room to re-queue a rate-limited batch); ``track`` returns ``(False, msg)``
    when its queue is full. A message over 32 KB would be dropped with only a log line, but
    these are ~0.5 KB (and the stored count would show it).
    """

    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes = 0
        self.statuses: Counter[int] = Counter()
        self.failed = 0  # events passed to on_error
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.requests = self.body_bytes = 0
        self.statuses = Counter()

    def on_error(self, exc: Exception, batch: Sequence[object]) -> None:
        with self._lock:
            self.failed += len(batch)
            self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1

    def filter(self, record: logging.LogRecord) -> bool:
        """Logger filter: the SDK logs a warning per event dropped for a full queue; those
        are counted (``track`` returned False) and reported once instead."""
        return "queue is full" not in record.getMessage()

    def on_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.requests += 1
        self.body_bytes += int(response.request.headers.get("Content-Length") or 0)
        self.statuses[int(response.status_code)] += 1


def wait_segment_flushed(q: queue.Queue[Any], timeout: float) -> bool:
    """``Client.flush()`` of segment-analytics-python is ``queue.join()``, which has no timeout:
    the same wait (every queued message ``task_done()``, i.e. its request answered or given
    up), on the same condition, with a deadline. True if it returned within ``timeout``."""
    deadline = time.monotonic() + timeout
    with q.all_tasks_done:
        while q.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            q.all_tasks_done.wait(remaining)
    return True


def stop_segment(client: SegmentClient, timeout: float = 20.0) -> None:
    """``Client.join()`` with a bound: stop the consumer threads (each notices within
    ``upload_interval``, or a retry wait's 1 s slice, or a request's 15 s timeout) and drop
    the ``atexit`` hook that would join them again at exit."""
    for consumer in client.consumers or []:
        consumer.pause()
    for consumer in client.consumers or []:
        with contextlib.suppress(RuntimeError):  # never started
            consumer.join(timeout)
    atexit.unregister(client.join)


def run_segment(server: Server, o: Options, rnd: int) -> Run:
    run = Run("segment", rnd, o.events)
    prefix = f"r{rnd}segment"
    warm = make_events(prefix + "w", WARMUP_EVENTS)
    events = make_events(prefix, o.events)
    counter = SegmentCounter()
    hooks = segment_request._session.hooks["response"]
    segment_log = logging.getLogger("segment")
    client = SegmentClient(
        server.public_key,  # the write key: sent as the HTTP Basic username
        host=server.base_url,  # the SDK posts to host + "/v1/batch"
        max_queue_size=o.queue_size,
        upload_size=o.batch_size,
        sync_mode=False,
        on_error=counter.on_error,
        # Defaults are 12 h and 30 min: only a failing run would notice; bound them.
        max_total_backoff_duration=o.flush_timeout,
        max_rate_limit_duration=o.flush_timeout,
    )
    q: queue.Queue[Any] = client.queue
    hooks.append(counter.on_response)
    segment_log.addFilter(counter)
    try:
        warm_dropped = 0
        for name, props, ext in warm:
            ok, _ = client.track(user_id=ext, event=name, properties=props)
            warm_dropped += not ok
        warm_ok = wait_segment_flushed(q, 30.0) and warm_dropped == 0 and counter.failed == 0
        warm_lost = warm_dropped + counter.failed
        server.sent += WARMUP_EVENTS - warm_lost
        wait_lag_zero(server, o.drain_timeout)
        counter.reset()
        failed0 = counter.failed
        dropped = 0
        durations = [0] * o.events
        track = client.track
        clock = time.perf_counter_ns
        meter = Meter(server.pid)
        thread0 = time.thread_time()
        t0 = clock()
        for i, (name, props, ext) in enumerate(events):
            s = clock()
            ok, _ = track(user_id=ext, event=name, properties=props)
            durations[i] = clock() - s
            if not ok:
                dropped += 1
        t_loop = clock()
        thread_cpu = time.thread_time() - thread0
        accepted = o.events - dropped
        # Answered (task_done) = accepted - unfinished; of those, failed went to on_error.
        run.delivered_in_loop = accepted - q.unfinished_tasks - (counter.failed - failed0)
        flushed = wait_segment_flushed(q, o.flush_timeout)
        t_end = clock()
        meter.finish(run)
        failed = counter.failed - failed0
        run.delivered = accepted - q.unfinished_tasks - failed
        run.ok = flushed and warm_ok and dropped == 0 and failed == 0
    finally:
        stop_segment(client)
        segment_log.removeFilter(counter)
        with contextlib.suppress(ValueError):
            hooks.remove(counter.on_response)
    # Dropped (queue full) and given-up (on_error) events are not expected on the server.
    run.dropped = dropped + failed
    run.expected = WARMUP_EVENTS + o.events - warm_lost - run.dropped
    server.sent += o.events - run.dropped
    run.seconds = (t_end - t0) / 1e9
    run.loop_seconds = (t_loop - t0) / 1e9
    durations.sort()
    run.track_us_mean = sum(durations) / len(durations) / 1e3
    run.track_us_p50 = _percentile(durations, 0.50) / 1e3
    run.track_us_p99 = _percentile(durations, 0.99) / 1e3
    run.track_us_max = durations[-1] / 1e3
    run.track_cpu_us = thread_cpu / o.events * 1e6
    run.requests = counter.requests
    run.request_bytes = counter.body_bytes
    run.statuses = {str(k): v for k, v in sorted(counter.statuses.items())}
    for error, n in counter.errors.items():
        print(f"      segment on_error x{n}: {error}", flush=True)
    return run


def run_httpx(server: Server, o: Options, rnd: int) -> Run:
    run = Run("httpx", rnd, o.events)
    prefix = f"r{rnd}httpx"
    warm = make_bodies(make_events(prefix + "w", WARMUP_EVENTS), o.batch_size)
    events = make_events(prefix, o.events)
    cpu0 = time.thread_time()
    bodies = make_bodies(events, o.batch_size)
    # What the SDK's track() does for JSON alone (uuid4 + json.dumps), for comparison.
    run.build_cpu_us = (time.thread_time() - cpu0) / o.events * 1e6
    headers = {
        "Authorization": f"Bearer {server.public_key}",
        "Content-Type": "application/json",
    }
    url = server.base_url + INGEST_PATH
    transport = CountingTransport()
    failed = 0
    with httpx.Client(transport=transport, timeout=30.0, headers=headers) as client:

        def post(body: bytes) -> bool:
            for attempt in range(6):  # 429/503 (saturated): back off, bounded
                r = client.post(url, content=body)
                if r.status_code not in (429, 503):
                    break
                time.sleep(0.05 * 2**attempt)
            return r.is_success

        warm_delivered = 0
        for i, body in enumerate(warm):
            if post(body):
                warm_delivered += min(o.batch_size, WARMUP_EVENTS - i * o.batch_size)
            else:
                failed += 1
        wait_lag_zero(server, o.drain_timeout)
        transport.reset()
        meter = Meter(server.pid)
        deadline = time.monotonic() + o.flush_timeout
        t0 = time.perf_counter_ns()
        for i, body in enumerate(bodies):
            if time.monotonic() > deadline:
                failed += 1
                break
            if post(body):
                run.delivered += min(o.batch_size, o.events - i * o.batch_size)
            else:
                failed += 1
        t_end = time.perf_counter_ns()
        meter.finish(run)
    run.seconds = run.loop_seconds = (t_end - t0) / 1e9
    run.ok = failed == 0
    # A failed request is not expected on the server (the run is not ok anyway).
    run.expected = warm_delivered + run.delivered
    server.sent += run.expected
    run.requests = transport.requests
    run.request_bytes = transport.body_bytes
    run.statuses = {str(k): v for k, v in sorted(transport.statuses.items())}
    return run


def check_stored(server: Server, run: Run, before: int, o: Options) -> None:
    """Wait for log_lag 0 (bounded), then count the run's rows in ``events``."""
    run.drained, run.drain_seconds = wait_lag_zero(server, o.drain_timeout)
    run.expected_total = server.sent
    deadline = time.monotonic() + 10.0
    while True:  # the count lags log_lag by at most a commit; re-read briefly if short
        run.stored_total = count_events(server.db)
        run.stored = run.stored_total - before
        if run.stored_ok or time.monotonic() > deadline:
            return
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def print_run(run: Run) -> None:
    per_req = run.events / run.requests if run.requests else 0.0
    line = (
        f"  round {run.round + 1} {LABELS[run.kind]:<{LABEL_WIDTH}} {run.events_per_s:>9,.0f} "
        f"events/s ({run.seconds:5.2f} s, {run.requests} req, {per_req:.0f} ev/req, "
        f"{run.request_bytes / run.events:.0f} B/event sent"
    )
    if run.kind in TRACKING_KINDS:
        line += (
            f"; track {run.track_us_mean:.1f} us/event mean, p50 {run.track_us_p50:.1f}, "
            f"p99 {run.track_us_p99:.1f}, max {run.track_us_max / 1e3:.1f} ms; loop "
            f"{run.loop_seconds:.2f} s, {run.delivered_in_loop:,} delivered by its end; "
            f"host thread CPU {run.track_cpu_us:.1f} us/event"
        )
    else:
        line += f"; bodies built beforehand, untimed: {run.build_cpu_us:.1f} us/event CPU"
    print(line + ")")
    if run.dropped:
        print(f"      {run.dropped:,} events dropped or given up by the client (see --queue-size)")
    stored = "stored ok" if run.stored_ok else "STORED MISMATCH"
    print(
        f"      client CPU {run.client_cpu_us:.1f} us/event, server {run.server_cores:.2f} "
        f"cores ({run.server_cpu_us:.0f} us/event), rest of machine {run.rest_cores:.2f} "
        f"cores; flush ok={run.ok}, dropped {run.dropped}, answers {run.statuses}; "
        f"log_lag 0 after {run.drain_seconds:.1f} s"
        f"{'' if run.drained else ' (NOT DRAINED)'}; {stored}: +{run.stored:,} rows "
        f"(expected +{run.expected:,}; total {run.stored_total:,}/{run.expected_total:,})",
        flush=True,
    )


@dataclass
class Summary:
    kind: str
    events_per_s: float
    ratio_segment: float  # median of the per-round ratios to segment-analytics-python (c)
    ratio_httpx: float  # median of the per-round ratios to the httpx loop (d)
    track_us_mean: float
    track_us_p50: float
    track_us_p99: float
    track_cpu_us: float
    client_cpu_us: float
    build_cpu_us: float
    all_ok: bool


def summarize(runs: Sequence[Run], repeats: int) -> dict[str, Summary]:
    out: dict[str, Summary] = {}

    def ratios(mine: Sequence[Run], ref_kind: str) -> float:
        ref = {r.round: r.events_per_s for r in runs if r.kind == ref_kind}
        return _med(
            [r.events_per_s / ref[r.round] for r in mine if ref.get(r.round) and r.events_per_s]
        )

    for kind in KINDS:
        mine = [r for r in runs if r.kind == kind]
        out[kind] = Summary(
            kind=kind,
            events_per_s=_med([r.events_per_s for r in mine]),
            ratio_segment=ratios(mine, "segment"),
            ratio_httpx=ratios(mine, "httpx"),
            track_us_mean=_med([r.track_us_mean for r in mine]),
            track_us_p50=_med([r.track_us_p50 for r in mine]),
            track_us_p99=_med([r.track_us_p99 for r in mine]),
            track_cpu_us=_med([r.track_cpu_us for r in mine]),
            client_cpu_us=_med([r.client_cpu_us for r in mine]),
            build_cpu_us=_med([r.build_cpu_us for r in mine]),
            all_ok=len(mine) == repeats and all(r.ok and r.stored_ok for r in mine),
        )
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _fs_type(path: Path) -> str:
    best, fs = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fs = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return fs


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_facts(workdir: Path) -> dict[str, str]:
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_version()} ({sys.executable})",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "temp dir fs": _fs_type(workdir),
        "sqlite": sqlite3.sqlite_version,
        "tidings": _version("tidings"),
        "tidings-client": _version("tidings-client"),
        "segment-analytics-python": _version("segment-analytics-python"),
        "requests": _version("requests"),
        "httpx": _version("httpx"),
        "GIL switch interval": f"{sys.getswitchinterval() * 1e3:g} ms (client process)",
        "max RSS so far": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB",
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        if rev:
            facts["commit"] = rev + (" (+ uncommitted changes)" if dirty else "")
    return facts


def print_summary(summary: dict[str, Summary], o: Options, facts: dict[str, str]) -> None:
    seg, ref = summary["segment"].events_per_s, summary["httpx"].events_per_s
    print(f"\n## Medians of {o.repeats} round(s), {o.events:,} events per run")
    for kind in KINDS:
        s = summary[kind]
        line = f"  ({LETTERS[kind]}) {LABELS[kind]:<{LABEL_WIDTH}} {s.events_per_s:>9,.0f} events/s"
        if kind in ("sdk", "spool"):
            line += (
                f"  vs segment-analytics-python {s.ratio_segment:.2f} (median per round; of "
                f"medians {s.events_per_s / seg if seg else 0.0:.2f})"
            )
        if kind != "httpx":
            line += (
                f"  vs httpx loop {s.ratio_httpx:.2f} (of medians "
                f"{s.events_per_s / ref if ref else 0.0:.2f}); track {s.track_us_mean:.1f} "
                f"us/event (p50 {s.track_us_p50:.1f}, p99 {s.track_us_p99:.1f}; "
                f"CPU {s.track_cpu_us:.1f})"
            )
        line += f"; client CPU {s.client_cpu_us:.1f} us/event"
        if kind == "httpx":
            line += f" (+ {s.build_cpu_us:.1f} untimed to build the JSON)"
        line += "" if s.all_ok else "  [NOT ALL RUNS DELIVERED AND STORED]"
        print(line)
    a, b, c = summary["sdk"], summary["spool"], summary["segment"]
    print(
        f"\n  (a)/(c) = {a.ratio_segment:.2f}    (b)/(c) = {b.ratio_segment:.2f}    "
        f"(a)/(d) = {a.ratio_httpx:.2f}    (b)/(d) = {b.ratio_httpx:.2f}    "
        f"(c)/(d) = {c.ratio_httpx:.2f}"
    )

    print("\n## For docs/benchmarks.md\n")
    print(
        f"Python SDK, one host thread, {o.batch_size}-event batches into one local "
        f"`tidings serve` (SQLite), {o.events:,} events per run, median of {o.repeats} "
        f"run(s); {facts['cpu']}, {facts['cores']} cores, Python {platform.python_version()}, "
        f"tidings-client {facts['tidings-client']}, segment-analytics-python "
        f"{facts['segment-analytics-python']}, commit {facts.get('commit', '?')}; "
        f"`bench/sdk.py{' --quick' if o.quick else ''}`.\n"
    )
    print(
        "| Client | events/s (first `track` → flush done) | vs segment-analytics-python "
        "| vs httpx loop | host time in `track`, µs/event (mean / p50 / p99) "
        "| client CPU, µs/event | all stored |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | :---: |")
    names = {
        "sdk": "`BatchingClient` → `/api/client/events`",
        "spool": "`BatchingClient(spool_path=…)` → `/api/client/events`",
        "segment": "`segment-analytics-python` `Client` → `/v1/batch` (reference)",
        "httpx": "plain `httpx.Client` loop, pre-built bodies → `/api/client/events`",
    }
    for kind in KINDS:
        s = summary[kind]
        track = (
            "-"
            if kind == "httpx"
            else f"{s.track_us_mean:.1f} / {s.track_us_p50:.1f} / {s.track_us_p99:.1f}"
        )
        vs_segment = {"segment": "1.00", "httpx": "-"}.get(kind, f"{s.ratio_segment:.2f}")
        vs_httpx = "1.00" if kind == "httpx" else f"{s.ratio_httpx:.2f}"
        print(
            f"| {names[kind]} | {s.events_per_s:,.0f} | {vs_segment} | {vs_httpx} | {track} "
            f"| {s.client_cpu_us:.1f} | {'yes' if s.all_ok else 'NO'} |"
        )
    print(
        f"\nRatios are medians of the per-round ratios. Flush done: `BatchingClient.flush()` "
        f"returned True; for segment-analytics-python, its `flush()` wait (`queue.join()`: "
        f"every message's request answered) returned, with a deadline. Both SDKs get "
        f"`max_queue_size` = {o.queue_size:,} so none of the burst is dropped for a full "
        f"queue. Client CPU is the whole client process (host thread and sender thread) per "
        f"event; the httpx loop's bodies (uuid4 + `json.dumps`) are built before its clock "
        f'starts ({summary["httpx"].build_cpu_us:.1f} µs/event). "All stored": after every '
        f"run `log_lag` reached 0 and the server's `events` table grew by exactly the events "
        f"sent."
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)  # so that the finally blocks stop the servers
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-sdk-"))
    facts = machine_facts(workdir)
    print("# Tidings Python SDK benchmark")
    for k, v in facts.items():
        print(f"  {k}: {v}")
    print(f"  temp dir: {workdir}{' (kept)' if o.keep else ' (removed at the end)'}")
    print(
        f"  {o.repeats} round(s) x {len(KINDS)} kinds x {o.events:,} events "
        f"(+{WARMUP_EVENTS} warm-up); batch_size / upload_size {o.batch_size}, max_queue_size "
        f"{o.queue_size:,} (both SDKs); one fresh server (own SQLite database) per kind",
        flush=True,
    )
    servers: dict[str, Server] = {}
    runs: list[Run] = []
    try:
        for kind in KINDS:
            servers[kind] = start_server(kind, workdir, o.env)
        print("  servers ready: " + ", ".join(f"{k} {s.base_url}" for k, s in servers.items()))
        actions: dict[str, Callable[[int], Run]] = {
            "sdk": lambda rnd: run_sdk(servers["sdk"], o, rnd, False, workdir),
            "spool": lambda rnd: run_sdk(servers["spool"], o, rnd, True, workdir),
            "segment": lambda rnd: run_segment(servers["segment"], o, rnd),
            "httpx": lambda rnd: run_httpx(servers["httpx"], o, rnd),
        }
        for rnd in range(o.repeats):
            print(f"\n## Round {rnd + 1}/{o.repeats}", flush=True)
            order = KINDS[rnd % len(KINDS) :] + KINDS[: rnd % len(KINDS)]
            for kind in order:
                server = servers[kind]
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{kind} server died:\n{tail(server.log)}")
                before = count_events(server.db)
                run = actions[kind](rnd)
                check_stored(server, run, before, o)
                runs.append(run)
                print_run(run)
        summary = summarize(runs, o.repeats)
        print_summary(summary, o, facts)
        if o.json_out is not None:
            o.json_out.write_text(
                json.dumps(
                    {
                        "facts": facts,
                        "options": {**asdict(o), "json_out": str(o.json_out)},
                        "runs": [{**asdict(r), "events_per_s": r.events_per_s} for r in runs],
                        "summary": {k: asdict(v) for k, v in summary.items()},
                    },
                    indent=2,
                )
            )
            print(f"\nJSON written to {o.json_out}")
        ok = all(s.all_ok for s in summary.values())
        print(f"\nDone in {time.monotonic() - started:.0f} s; every event stored: {ok}")
        return 0 if ok else 1
    finally:
        for server in servers.values():
            stop_process(server.proc)
        if o.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
