"""Plumbing for ``bench/ingest.py``: processes, wrk + Lua load, an exact-count pusher, polling;
and for the database benches (``bench/reporting.py``): fresh databases, bulk loads.

Nothing in here knows about targets or reporting; it only starts things, drives load and
measures. Every loop is bounded in count or time, and every process it starts is started in
its own session so that it can be stopped as a group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import httpx
import sqlalchemy as sa

from tidings.store import migrate
from tidings.store.database import Database, open_database

INGEST_PATH = "/api/client/events"
HEALTH_PATH = "/api/health"

EVENT_NAMES = ("Order placed", "Page viewed", "Added to cart", "Signed up", "Checkout started")

# One event of the realistic mix; ``data`` is ~200 bytes. The Lua generator below builds the
# byte-for-byte same text so that wrk and the Python pusher send the same kind of body.
_EVENT_FMT = (
    '{{"name":"{name}","external_id":"u_{prefix}_{uid}","data":{{"total":{cents_int}.{cents:02d},'
    '"currency":"EUR","items":{items},"sku":"SKU-{sku:06d}","coupon":"SPRING24","channel":"web",'
    '"page":"/checkout/confirm","utm_source":"newsletter","utm_campaign":"spring-sale",'
    '"session":"s_{prefix}_{session:08d}"}}}}'
)


def make_event(prefix: str, n: int, users: int) -> str:
    """Event number ``n`` (1-based) of a stream whose external ids cycle over ``users`` users."""
    return _EVENT_FMT.format(
        name=EVENT_NAMES[n % len(EVENT_NAMES)],
        prefix=prefix,
        uid=n % users,
        cents_int=n % 500,
        cents=n % 100,
        items=n % 7 + 1,
        sku=(n * 7919) % 1_000_000,
        session=n // 5,
    )


def make_body(prefix: str, start: int, batch: int, users: int) -> bytes:
    return (
        "[" + ",".join(make_event(prefix, start + j, users) for j in range(batch)) + "]"
    ).encode()


# --------------------------------------------------------------------------------------------
# wrk + Lua
# --------------------------------------------------------------------------------------------

# Request bodies are pre-built in init() (a pool cycled round-robin) so that wrk spends its
# CPU on sockets, not string building. With ``rate > 0`` a ``delay()`` paces requests on a
# fixed schedule shared by the thread's connections (wrk2-style, open-loop as long as a
# connection is free when its slot comes): each call claims the next slot and waits until
# it. A request that could only be sent after its slot was "late"; late requests are counted
# because wrk measures latency from the actual send, so many of them would mean the server
# fell behind the offered rate and the reported latency understates what clients saw.
_LUA = Template(
    r"""
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local PATH = "$path"
local AUTH = "$auth"
local PREFIX = "$prefix"
local BATCH = $batch
local POOL = $pool
local USERS = $users
local RATE = $rate           -- requests/s for the whole run, 0 = as fast as possible
local THREADS = $threads
local NAMES = {"Order placed", "Page viewed", "Added to cart", "Signed up", "Checkout started"}

local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local function event(prefix, n)
  return string.format(
    '{"name":"%s","external_id":"u_%s_%d","data":{"total":%d.%02d,"currency":"EUR",' ..
    '"items":%d,"sku":"SKU-%06d","coupon":"SPRING24","channel":"web",' ..
    '"page":"/checkout/confirm","utm_source":"newsletter","utm_campaign":"spring-sale",' ..
    '"session":"s_%s_%08d"}}',
    NAMES[n % #NAMES + 1], prefix, n % USERS, n % 500, n % 100, n % 7 + 1,
    (n * 7919) % 1000000, prefix, math.floor(n / 5))
end

local reqs = {}
local idx = 0
late_count = 0
paced = 0
max_late = 0.0
local next_ms = nil
local interval_ms = 0

function init(args)
  local prefix = PREFIX .. "t" .. tostring(tid)
  local headers = {
    ["Authorization"] = AUTH,
    ["Content-Type"] = "application/json",
  }
  for i = 1, POOL do
    local evs = {}
    for j = 1, BATCH do
      evs[j] = event(prefix, (i - 1) * BATCH + j)
    end
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    reqs[i] = wrk.format("POST", PATH, h, "[" .. table.concat(evs, ",") .. "]")
  end
  if RATE > 0 then
    interval_ms = 1000.0 * THREADS / RATE
  end
end

function request()
  idx = idx % POOL + 1
  return reqs[idx]
end

$delay_fn

function done(summary, latency, requests)
  local late, pcount, maxl = 0, 0, 0.0
  for _, t in ipairs(threads) do
    late = late + (t:get("late_count") or 0)
    pcount = pcount + (t:get("paced") or 0)
    local m = t:get("max_late") or 0.0
    if m > maxl then maxl = m end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,' ..
    '"mean":%.1f,"max":%d,"late":%d,"paced":%d,"max_late_ms":%.2f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max,
    late, pcount, maxl))
end
"""
)

_DELAY_FN = r"""
function delay()
  local t = now_ms()
  if next_ms == nil then next_ms = t end
  local slot = next_ms
  next_ms = next_ms + interval_ms
  paced = paced + 1
  local d = slot - t
  if d < 0 then
    if -d > 2.0 then late_count = late_count + 1 end
    if -d > max_late then max_late = -d end
    return 0
  end
  return math.floor(d + 0.5)
end
"""


@dataclass(frozen=True)
class LoadSpec:
    """What one wrk run sends."""

    auth: str
    prefix: str
    batch: int = 1
    pool: int = 20_000
    users: int = 0  # 0: pool * batch distinct external ids
    rate: float = 0.0  # requests/s; 0 = closed loop, as fast as possible
    threads: int = 1

    def lua(self) -> str:
        return _LUA.substitute(
            path=INGEST_PATH,
            auth=self.auth,
            prefix=self.prefix,
            batch=self.batch,
            pool=self.pool,
            users=self.users or self.pool * self.batch,
            rate=repr(float(self.rate)),
            threads=self.threads,
            delay_fn=_DELAY_FN if self.rate > 0 else "",
        )


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    lat_ms: dict[str, float]
    late: int
    paced: int
    max_late_ms: float
    server_pid: int | None = None
    server_cpu_s: float = 0.0
    thread_cpu_s: dict[int, tuple[str, float]] = field(default_factory=dict)
    wrk_cpu_s: float = 0.0
    machine: dict[str, float] = field(default_factory=dict)  # cores busy / steal / idle

    @property
    def rps(self) -> float:
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok_requests(self) -> int:
        return max(0, self.requests - self.errors.get("status", 0))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.duration_s if self.duration_s > 0 else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if not found:
        raise SystemExit("wrk not found: apt-get install wrk")
    return found


def run_wrk(
    base_url: str,
    spec: LoadSpec,
    *,
    connections: int,
    duration: float,
    workdir: Path,
    server_pid: int | None = None,
    during: Callable[[], None] | None = None,
) -> WrkResult:
    """One wrk run; ``during`` is called repeatedly (bounded by the run's time) while it runs."""
    script = workdir / f"wrk_{spec.prefix}.lua"
    script.write_text(spec.lua())
    secs = max(1, round(duration))
    cmd = [
        wrk_binary(),
        f"-t{spec.threads}",
        f"-c{max(connections, spec.threads)}",
        f"-d{secs}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url + INGEST_PATH,
    ]
    before = proc_cpu(server_pid) if server_pid else None
    before_threads = thread_cpu(server_pid) if server_pid else {}
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_stat = machine_cpu()
    t0 = time.monotonic()
    deadline = time.monotonic() + secs + 60
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if during is not None:
                    during()
                else:
                    time.sleep(0.1)
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            stop_process(proc)
    after = proc_cpu(server_pid) if server_pid else None
    after_threads = thread_cpu(server_pid) if server_pid else {}
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_stat = machine_cpu()
    wall = time.monotonic() - t0
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (rc={proc.returncode}):\n{out}\n{err}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    result = WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors={k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")},
        lat_ms={k: raw[k] / 1000.0 for k in ("p50", "p90", "p99", "p999", "mean", "max")},
        late=int(raw["late"]),
        paced=int(raw["paced"]),
        max_late_ms=float(raw["max_late_ms"]),
    )
    result.server_pid = server_pid
    result.wrk_cpu_s = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    if wall > 0:
        result.machine = {k: (after_stat[k] - before_stat.get(k, 0.0)) / wall for k in after_stat}
    if before is not None and after is not None:
        result.server_cpu_s = after - before
        result.thread_cpu_s = {
            tid: (name, cpu - before_threads.get(tid, (name, 0.0))[1])
            for tid, (name, cpu) in after_threads.items()
        }
    return result


# --------------------------------------------------------------------------------------------
# exact-count pusher (for the processing-rate measurement)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One ``GET /api/health`` reading: ``log_lag`` and, when the server reports it,
    the consumer's ``processed`` counter."""

    t: float  # time.monotonic()
    lag: int
    processed: int | None


@dataclass
class PushResult:
    events: int
    requests: int
    failures: int
    retries: int
    started: float  # time.monotonic()
    finished: float
    samples: list[Sample]  # health readings while pushing


async def _push(
    base_url: str,
    auth: str,
    bodies: Sequence[bytes],
    batch: int,
    concurrency: int,
    poll_every: float,
    timeout: float,
) -> PushResult:
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency)
    samples: list[Sample] = []
    failures = 0
    retries = 0
    next_body = iter(range(len(bodies)))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:
        deadline = time.monotonic() + timeout

        async def worker() -> None:
            nonlocal failures, retries
            for i in next_body:
                for attempt in range(6):  # 503 = saturated log: back off, bounded
                    if time.monotonic() > deadline:
                        return
                    r = await client.post(INGEST_PATH, content=bodies[i], headers=headers)
                    if r.status_code != 503:
                        break
                    retries += 1
                    await asyncio.sleep(0.05 * 2**attempt)
                if r.status_code >= 300:
                    failures += 1

        async def poller(stop: asyncio.Event) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                got = await _asample(client)
                if got is not None:
                    samples.append(got)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_every)

        stop = asyncio.Event()
        started = time.monotonic()
        poll_task = asyncio.create_task(poller(stop))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        finished = time.monotonic()
        stop.set()
        await poll_task
    ok = len(bodies) - failures
    return PushResult(ok * batch, len(bodies), failures, retries, started, finished, samples)


def push_events(
    base_url: str,
    auth: str,
    *,
    prefix: str,
    events: int,
    batch: int,
    users: int = 0,
    concurrency: int = 8,
    poll_every: float = 0.25,
    timeout: float = 300.0,
) -> PushResult:
    """POST exactly ``events`` events in ``batch``-sized requests, as fast as it goes.

    External ids cycle over ``users`` users (default: every event a new user).
    """
    bodies = [
        make_body(prefix, start, min(batch, events + 1 - start), users or events)
        for start in range(1, events + 1, batch)
    ]
    return asyncio.run(_push(base_url, auth, bodies, batch, concurrency, poll_every, timeout))


# --------------------------------------------------------------------------------------------
# health / lag
# --------------------------------------------------------------------------------------------


def _sample_of(payload: Any) -> Sample | None:
    if not isinstance(payload, dict):
        return None
    lag = payload.get("log_lag")
    if not isinstance(lag, int | float):
        return None
    processed = payload.get("processed")
    return Sample(
        time.monotonic(),
        int(lag),
        int(processed) if isinstance(processed, int | float) else None,
    )


async def _asample(client: httpx.AsyncClient) -> Sample | None:
    try:
        r = await client.get(HEALTH_PATH)
        return _sample_of(r.json()) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def sample(client: httpx.Client) -> Sample | None:
    try:
        r = client.get(HEALTH_PATH)
        return _sample_of(r.json()) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


@dataclass
class DrainResult:
    drained: bool
    seconds: float
    samples: list[Sample]

    @property
    def start_lag(self) -> int | None:
        return self.samples[0].lag if self.samples else None

    @property
    def end_lag(self) -> int | None:
        return self.samples[-1].lag if self.samples else None

    def rate(self) -> float:
        """Items processed per second while draining (``processed`` counter, else lag)."""
        return processing_rate(self.samples)


def processing_rate(samples: Sequence[Sample]) -> float:
    """Processed items/s between the first and last sample.

    Uses the server's ``processed`` counter when present; otherwise the fall of ``log_lag``
    (which is only right when nothing new arrives meanwhile).
    """
    if len(samples) < 2:
        return 0.0
    first, last = samples[0], samples[-1]
    dt = last.t - first.t
    if dt <= 0:
        return 0.0
    if first.processed is not None and last.processed is not None:
        return (last.processed - first.processed) / dt
    return (first.lag - last.lag) / dt


def wait_for_lag_zero(
    client: httpx.Client, *, timeout: float, poll_every: float = 0.2
) -> DrainResult:
    """Poll ``log_lag`` until it is 0 (bounded by ``timeout``)."""
    t0 = time.monotonic()
    samples: list[Sample] = []
    while True:
        got = sample(client)
        if got is not None:
            samples.append(got)
            if got.lag == 0:
                return DrainResult(True, got.t - t0, samples)
        if time.monotonic() - t0 > timeout:
            return DrainResult(False, time.monotonic() - t0, samples)
        # Counting the lag is a query: poll briskly at first, then gently.
        time.sleep(poll_every if time.monotonic() - t0 < 2.0 else max(poll_every, 0.5))


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope (units/s) of (time, value) points; 0 with fewer than 2."""
    if len(points) < 2:
        return 0.0
    xs = [t for t, _ in points]
    ys = [float(v) for _, v in points]
    try:
        return statistics.linear_regression(xs, ys).slope
    except statistics.StatisticsError:
        return 0.0


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_process(cmd: Sequence[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            list(cmd),
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
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


def wait_ready(
    base_url: str, proc: subprocess.Popen[bytes], *, timeout: float, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
            try:
                r = client.get(HEALTH_PATH)
                if r.status_code == 200:
                    payload = r.json()
                    return payload if isinstance(payload, dict) else {}
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu(stat_path: Path) -> tuple[str, float] | None:
    try:
        raw = stat_path.read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime/stime are fields 14/15 -> indices 11/12.
    return name, (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_cpu(pid: int | None) -> float | None:
    """User+system CPU seconds of a process (all its threads)."""
    if pid is None:
        return None
    got = _stat_cpu(Path(f"/proc/{pid}/stat"))
    return got[1] if got else None


def thread_cpu(pid: int | None) -> dict[int, tuple[str, float]]:
    """CPU seconds per thread: ``{tid: (name, seconds)}`` (the main thread's tid is ``pid``)."""
    out: dict[int, tuple[str, float]] = {}
    if pid is None:
        return out
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            got = _stat_cpu(task / "stat")
            if got:
                out[int(task.name)] = got
    return out


_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine since boot: busy, idle (incl. iowait) and steal."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return {}
    ticks = dict(zip(_STAT_FIELDS, (int(x) for x in first[1:9]), strict=False))
    busy = sum(ticks.get(k, 0) for k in ("user", "nice", "system", "irq", "softirq"))
    return {
        "busy": busy / _CLK_TCK,
        "idle": (ticks.get("idle", 0) + ticks.get("iowait", 0)) / _CLK_TCK,
        "steal": ticks.get("steal", 0) / _CLK_TCK,
    }


# -- databases ---------------------------------------------------------------------------------


@dataclass
class Databases:
    """Fresh databases migrated to the head: SQLite files in ``tmp``, PostgreSQL databases
    named ``<prefix>_<pid>_<random>_<label>`` next to ``postgres_url``'s, each dropped
    (``WITH (FORCE)``) when its block ends, and any left by ``close``."""

    postgres_url: str
    tmp: Path
    prefix: str = "tidings_bench"
    created: list[str] = field(default_factory=list)

    def _admin(self) -> sa.Engine:
        url = self.postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    @contextlib.contextmanager
    def fresh(self, backend: str, label: str) -> Iterator[Database]:
        if backend == "sqlite":
            path = self.tmp / f"{label}-{secrets.token_hex(3)}.db"
            db = open_database(f"sqlite:///{path}", sqlite_synchronous="NORMAL")
            try:
                migrate.upgrade(db.writer)
                yield db
            finally:
                db.dispose()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        name = f"{self.prefix}_{os.getpid()}_{secrets.token_hex(3)}_{label}"
        admin = self._admin()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        self.created.append(name)
        url = sa.engine.make_url(self.postgres_url).set(database=name)
        db = open_database(url.render_as_string(hide_password=False))
        try:
            migrate.upgrade(db.writer)
            yield db
        finally:
            db.dispose()
            self.drop(name)

    def drop(self, name: str) -> None:
        admin = self._admin()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(name)


@contextlib.contextmanager
def indexes_dropped(db: Database, table: str) -> Iterator[None]:
    """Drop ``table``'s secondary indexes for a bulk load and build them again after it
    (one sort each instead of a B-tree insert per row and index). The unique constraints
    and the primary key stay."""
    with db.writer.begin() as conn:
        if db.is_sqlite:
            found = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL",
                (table,),
            ).all()
        else:
            found = conn.exec_driver_sql(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "JOIN pg_class c ON c.relname = i.indexname "
                "JOIN pg_index x ON x.indexrelid = c.oid "
                "WHERE i.tablename = %s AND i.schemaname = current_schema() "
                "AND NOT x.indisunique",
                (table,),
            ).all()
        for name, _ in found:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with db.writer.begin() as conn:
            for _, sql in found:
                # A partitioned table's index reads "ON ONLY" (the parent alone, invalid
                # until each partition has one): built for every partition instead.
                conn.exec_driver_sql(sql.replace(" ON ONLY ", " ON ", 1))
        db.checkpoint()  # SQLite: copy the WAL into the database (nothing on PostgreSQL)
