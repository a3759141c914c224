"""Scale-out benchmark: ingest and processing on PostgreSQL, one worker against two.

    .venv/bin/python bench/scaleout.py [--quick] [--postgres-url URL] [--json PATH]

In one run, on one machine, against the PostgreSQL server at ``--postgres-url``:

1. Ingest: wrk drives single-event ``POST /api/client/events`` and 100-event batches into a
   ``tidings api`` node (no worker) on a fresh PostgreSQL database, into ``tidings serve``
   with ``TIDINGS_RUN_WORKER=false`` on a fresh SQLite database (the reference), and, when a
   JetStream server answers at ``--nats-url`` and Tidings' JetStream log works, into a
   ``tidings api`` node whose log is a fresh JetStream stream. The rounds interleave the
   targets, so the machine's noise hits them alike; medians and ratios are reported.
2. Processing: with no worker running, a backlog of ``--events`` events is pushed through a
   ``tidings api`` node into a fresh database; then one ``tidings worker`` (or two) is
   started and timed until ``GET /api/health`` reports ``log_lag`` 0. Each run gets a fresh
   database; one-worker and two-worker runs alternate.

Every database and stream it creates is dropped at the end, every process it starts is
stopped (also on errors and Ctrl-C), every loop is bounded in time or count. A figure
below a target never makes it fail; only errors do. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

import _load
import ingest
from _load import LoadSpec, Sample, WrkResult
from ingest import Series
from tidings.store.leases import PARTITION_SPACE

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TARGET_BATCH_EVENTS = 100_000.0  # the project's ingest target (docs/benchmarks.md)
TARGET_PROCESSING = 5_000.0  # the project's processing target


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    postgres_url: str
    nats_url: str | None
    duration: float
    warmup: float
    repeats: int
    connections: int
    batch_connections: int
    batch: int
    events: int
    events_per_user: int
    partitions: int
    drain_timeout: float
    stall_timeout: float
    skip_ingest: bool
    skip_processing: bool
    keep: bool
    json_out: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        description="Tidings scale-out benchmark: ingest on PostgreSQL, one vs two workers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short run, rougher figures")
    p.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (its database part is ignored: each scenario gets a new one)",
    )
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="JetStream server")
    p.add_argument("--no-nats", action="store_true", help="skip the JetStream ingest scenario")
    p.add_argument("--duration", type=float, help="seconds per wrk run (10, quick 3)")
    p.add_argument("--repeats", type=int, help="rounds of every scenario; medians (3, quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, single events")
    p.add_argument("--batch-connections", type=int, default=16, help="wrk connections, batches")
    p.add_argument("--batch", type=int, default=100, help="events per batch request")
    p.add_argument("--events", type=int, help="processing backlog (100,000, quick 20,000)")
    p.add_argument("--events-per-user", type=int, default=10, help="backlog: events per user")
    p.add_argument("--partitions", type=int, default=8, help="TIDINGS_LOG_PARTITIONS")
    p.add_argument("--drain-timeout", type=float, help="max seconds per drain (300, quick 120)")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=20.0,
        help="a drain whose log_lag does not move for this long is given up as stalled",
    )
    p.add_argument("--skip-ingest", action="store_true", help="only the processing runs")
    p.add_argument("--skip-processing", action="store_true", help="only the ingest runs")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, Lua)")
    p.add_argument("--json", dest="json_out", type=Path, help="also write the results as JSON")
    a = p.parse_args(argv)
    q = bool(a.quick)
    nats_url = None if a.no_nats else str(a.nats_url)
    for url in (a.postgres_url, nats_url):
        if url is not None and (urlsplit(url).hostname or "") not in LOOPBACK:
            p.error(f"this benchmark only talks to the local machine: {url!r}")
    if a.partitions < 1 or a.batch < 1:
        p.error("--partitions and --batch must be at least 1")
    return Options(
        quick=q,
        postgres_url=str(a.postgres_url),
        nats_url=nats_url,
        duration=a.duration if a.duration is not None else (3.0 if q else 10.0),
        warmup=1.0 if q else 2.0,
        repeats=max(1, a.repeats if a.repeats is not None else (1 if q else 3)),
        connections=a.connections,
        batch_connections=a.batch_connections,
        batch=a.batch,
        events=max(a.batch, a.events if a.events is not None else (20_000 if q else 100_000)),
        events_per_user=max(1, a.events_per_user),
        partitions=a.partitions,
        drain_timeout=a.drain_timeout or (120.0 if q else 300.0),
        stall_timeout=max(5.0, a.stall_timeout),
        skip_ingest=bool(a.skip_ingest),
        skip_processing=bool(a.skip_processing),
        keep=bool(a.keep),
        json_out=a.json_out,
    )


# --------------------------------------------------------------------------------------------
# what the run creates: processes, databases, streams (all undone by Stack.close)
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    """A Tidings HTTP process (``api`` or ``serve``)."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]
    auth: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass(frozen=True)
class Leases:
    """Who holds the log's partitions, from ``pg_locks``."""

    shares: tuple[int, ...]  # partitions held by each worker of this database, largest first

    @property
    def held(self) -> int:
        return sum(self.shares)


class CpuWindow:
    """Cores used by groups of processes, and by the whole machine, over a span of time.

    A group is a function returning its pids (asked at the start and at the end: a process
    that only exists at the end counts from 0, one that ended meanwhile is lost).
    """

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self.groups = groups
        self.t0 = time.monotonic()
        self.machine = _load.machine_cpu()
        self.before = {name: _cpu_by_pid(pids()) for name, pids in groups.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        machine = _load.machine_cpu()
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            before = self.before[name]
            used = sum(cpu - before.get(pid, 0.0) for pid, cpu in _cpu_by_pid(pids()).items())
            out[name] = round(used / wall, 3) if wall > 0 else 0.0
        for key in ("busy", "idle"):
            out[f"machine {key}"] = round((machine[key] - self.machine[key]) / wall, 3)
        return out


def _cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := _load.proc_cpu(pid)) is not None}


def nats_server_pids() -> list[int]:
    """The local nats-server(s), to read their CPU time (the JetStream scenario)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "nats-server":
                pids.append(int(comm.parent.name))
    return pids


def cores_text(cpu: dict[str, float]) -> str:
    """``api 0.45, PostgreSQL 0.61, … rest 0.40, idle 0.02`` (rest = other processes)."""
    shown = {k: v for k, v in cpu.items() if not k.startswith("machine ")}
    rest = cpu.get("machine busy", 0.0) - sum(shown.values())
    parts = [f"{k} {v:.2f}" for k, v in shown.items()]
    return ", ".join(
        [*parts, f"rest {max(0.0, rest):.2f}", f"idle {cpu.get('machine idle', 0):.2f}"]
    )


class Stack:
    """Every process, database and JetStream stream of the run, so all of them go in the end."""

    def __init__(self, o: Options, workdir: Path) -> None:
        self.o = o
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.databases: list[str] = []
        self.streams: list[str] = []
        self.starts = 0
        self.keep_logs = False  # set when the run failed: the logs tell why
        self.run_id = f"{os.getpid()}_{secrets.token_hex(3)}"
        parts = urlsplit(o.postgres_url)
        self._pg_base = (parts.scheme, parts.netloc)
        self.admin = psycopg.connect(self.pg_url("postgres"), autocommit=True, connect_timeout=5)

    # -- PostgreSQL ---------------------------------------------------------------------

    def pg_url(self, database: str) -> str:
        return urlunsplit((*self._pg_base, f"/{database}", "", ""))

    def server_version(self) -> str:
        row = self.admin.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def create_database(self, tag: str) -> str:
        name = f"tidings_bench_{tag}_{self.run_id}_{len(self.databases)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(psycopg.Error):
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def backends(self, database: str) -> list[int]:
        """Server processes of PostgreSQL connected to ``database`` (for their CPU time)."""
        rows = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
        return [int(pid) for (pid,) in rows]

    def leases_of(self, database: str) -> Leases:
        """The partition locks of the workers of ``database``, per worker (its lease
        connection's backend pid). Advisory locks are per database; pg_locks lists all."""
        rows = self.admin.execute(
            "SELECT l.pid, count(*) FROM pg_locks l "
            "JOIN pg_database d ON d.oid = l.database AND d.datname = %s "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid::bigint = %s GROUP BY l.pid",
            (database, PARTITION_SPACE),
        ).fetchall()
        return Leases(tuple(sorted((int(n) for _, n in rows), reverse=True)))

    # -- processes ----------------------------------------------------------------------

    def env(self, database_url: str, log_url: str = "db", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(
            TIDINGS_DATABASE_URL=database_url,
            TIDINGS_LOG_URL=log_url,
            TIDINGS_LOG_PARTITIONS=str(self.o.partitions),
            TIDINGS_DEMO_PROJECT="false",
        )
        env.update(extra)
        return env

    def cli(self, env: dict[str, str], *args: str, timeout: float = 120) -> str:
        cmd = [sys.executable, "-m", "tidings", *args]
        r = subprocess.run(
            cmd, env=env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
        )
        if r.returncode != 0:
            raise RuntimeError(f"`tidings {' '.join(args)}` failed ({r.returncode}):\n{r.stderr}")
        return r.stdout

    def prepare(self, env: dict[str, str]) -> str:
        """Schema and a project; returns the project's public key."""
        self.cli(env, "migrate")
        out = self.cli(env, "project", "create", "--name", "bench", "--json")
        line = next((ln for ln in reversed(out.splitlines()) if ln.strip().startswith("{")), "")
        try:
            return str(json.loads(line)["public_key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"unexpected `project create --json` output:\n{out}") from exc

    def _log(self, name: str) -> Path:
        self.starts += 1
        return self.workdir / f"{self.starts:02d}-{name}.log"

    def http(self, name: str, command: str, env: dict[str, str], key: str) -> Node:
        """Start ``tidings api`` or ``tidings serve`` and wait until it answers."""
        port = _load.free_port()
        log = self._log(name)
        cmd = [sys.executable, "-m", "tidings", command, "--host", "127.0.0.1", "--port", str(port)]
        proc = _load.start_process(cmd, env=env, log=log)
        self.procs.append(proc)
        node = Node(name, f"http://127.0.0.1:{port}", proc, f"Bearer {key}", log)
        _load.wait_ready(node.base_url, proc, timeout=60, log=log)
        return node

    def worker(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "tidings", "worker"]
        proc = _load.start_process(cmd, env=env, log=self._log(name))
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        _load.stop_process(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    # -- JetStream ------------------------------------------------------------------------

    def new_stream(self) -> tuple[str, str]:
        """A stream name and subject prefix of this run's own; deleted in ``close``."""
        name = f"TIDINGS_BENCH_{self.run_id.upper()}_{len(self.streams)}"
        self.streams.append(name)
        return name, f"bench.{self.run_id}.{len(self.streams) - 1}"

    def drop_streams(self) -> None:
        if self.streams and self.o.nats_url:
            error = delete_streams(self.o.nats_url, self.streams)
            if error:
                print(f"warning: could not delete JetStream streams {self.streams}: {error}")
        self.streams.clear()

    # -- the end ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, drop every database and stream; Ctrl-C can't cut it short."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for proc in reversed(list(self.procs)):
                self.stop(proc)
            for name in list(self.databases):
                self.drop_database(name)
            self.drop_streams()
            with contextlib.suppress(psycopg.Error):
                self.admin.close()
            if self.o.keep or self.keep_logs:
                print(f"server logs kept in {self.workdir}", file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------
# JetStream: is there a server, and cleaning up after it
# --------------------------------------------------------------------------------------------


def _nats_call(url: str, fn: Callable[[Any], Any], timeout: float = 5.0) -> Any:
    """Run ``await fn(jetstream)`` on a fresh connection, bounded by ``timeout`` seconds."""
    import nats

    async def call() -> Any:
        nc = await nats.connect(
            url, connect_timeout=timeout, allow_reconnect=False, max_reconnect_attempts=0
        )
        try:
            return await fn(nc)
        finally:
            await nc.close()

    return asyncio.run(asyncio.wait_for(call(), timeout * 2))


def probe_jetstream(url: str) -> tuple[str | None, str]:
    """(None, server version) when JetStream answers at ``url``, else (why not, "")."""

    async def check(nc: Any) -> str:
        await nc.jetstream(timeout=5.0).account_info()
        return str(nc.connected_server_version)

    try:
        return None, str(_nats_call(url, check))
    except Exception as exc:  # any failure means "not usable here"
        return f"no JetStream at {url} ({type(exc).__name__}: {exc})", ""


def delete_streams(url: str, names: Sequence[str]) -> str | None:
    async def delete(nc: Any) -> None:
        js = nc.jetstream(timeout=5.0)
        for name in names:
            with contextlib.suppress(Exception):  # never created, or already gone
                await js.delete_stream(name)

    try:
        _nats_call(url, delete, timeout=10.0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------------------------
# 1. ingest
# --------------------------------------------------------------------------------------------


@dataclass
class IngestTarget:
    key: str  # "pg", "sqlite", "nats"
    label: str
    node: Node
    single: Series
    batch: Series
    database: str | None = None  # PostgreSQL database, for its backends' CPU
    cpu: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {"single": [], "batch": []}
    )

    def cpu_groups(self, st: Stack) -> dict[str, Callable[[], Sequence[int]]]:
        groups: dict[str, Callable[[], Sequence[int]]] = {
            "server": lambda: [self.node.pid],
            "wrk": lambda: [],  # filled from wrk's own accounting (a child of this script)
        }
        if self.database is not None:
            database = self.database
            groups["PostgreSQL"] = lambda: st.backends(database)
        if self.key == "nats":
            groups["nats-server"] = nats_server_pids
        return groups

    def cores(self, kind: str) -> dict[str, float]:
        """Median cores per group over the runs of ``kind`` ("single" or "batch")."""
        runs = self.cpu[kind]
        keys = runs[0].keys() if runs else ()
        return {k: statistics.median(r[k] for r in runs) for k in keys}


def say(msg: str = "") -> None:
    print(msg, flush=True)


def health(node: Node) -> Sample | None:
    with httpx.Client(base_url=node.base_url, timeout=10.0) as client:
        return _load.sample(client)


def sanity_check(node: Node, batch: int) -> None:
    """A single event and a full batch must be accepted, and counted in ``log_lag``."""
    headers = {"Authorization": node.auth, "Content-Type": "application/json"}
    with httpx.Client(base_url=node.base_url, timeout=30.0) as client:
        for n in (1, batch):
            body = _load.make_body("sanity", 1, n, n)
            r = client.post(_load.INGEST_PATH, content=body, headers=headers)
            if r.status_code >= 300:
                raise RuntimeError(
                    f"{node.name}: POST of {n} event(s) -> {r.status_code}: {r.text}"
                )
    got = health(node)
    if got is None or got.lag != 1 + batch:
        raise RuntimeError(f"{node.name}: log_lag {got.lag if got else None}, not {1 + batch}")


def start_ingest_targets(o: Options, st: Stack, notes: list[str]) -> list[IngestTarget]:
    targets: list[IngestTarget] = []

    def add(key: str, label: str, node: Node, database: str | None) -> None:
        sanity_check(node, o.batch)
        series = Series(key, 1), Series(key, o.batch)
        targets.append(IngestTarget(key, label, node, *series, database=database))

    db = st.create_database("ingest_pg")
    env = st.env(st.pg_url(db))
    add("pg", "PostgreSQL `tidings api`", st.http("api-pg", "api", env, st.prepare(env)), db)

    sqlite_url = f"sqlite:///{st.workdir / 'ingest.db'}"
    env = st.env(sqlite_url, TIDINGS_RUN_WORKER="false")
    add(
        "sqlite",
        "SQLite `tidings serve`, no worker",
        st.http("serve-sqlite", "serve", env, st.prepare(env)),
        None,
    )

    if o.nats_url is None:
        notes.append("JetStream: skipped: --no-nats")
        return targets
    why, server_version = probe_jetstream(o.nats_url)
    if why:
        notes.append(f"JetStream: skipped: {why}")
        return targets
    stream, prefix = st.new_stream()
    sep = "&" if "?" in o.nats_url else "?"
    log_url = f"{o.nats_url}{sep}stream={stream}&prefix={prefix}"
    db = st.create_database("ingest_nats")
    env = st.env(st.pg_url(db), log_url)
    node: Node | None = None
    try:
        node = st.http("api-nats", "api", env, st.prepare(env))
        add("nats", "PostgreSQL + JetStream log `tidings api`", node, db)
        say(f"  JetStream: nats-server {server_version}, stream {stream}")
    except (RuntimeError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        detail = str(exc).strip().splitlines()
        notes.append(
            "JetStream: skipped: Tidings' JetStream log did not work here: "
            + (detail[-1] if detail else type(exc).__name__)
            + (f" (log: {node.log})" if node else "")
        )
        if node is not None:
            st.stop(node.proc)
    return targets


def show(label: str, r: WrkResult, per_request: int, cpu: dict[str, float]) -> None:
    eps = f" = {r.rps * per_request:>9,.0f} events/s" if per_request > 1 else ""
    err = f"  ERRORS {r.errors}" if r.error_count else ""
    say(
        f"  {label:<44}{r.rps:>8,.0f} req/s{eps}  p50 {r.lat_ms['p50']:5.1f} ms  "
        f"p99 {r.lat_ms['p99']:6.1f} ms{err}"
    )
    say(f"  {'':<44}cores busy: {cores_text(cpu)}")


def run_ingest(o: Options, st: Stack, notes: list[str]) -> list[IngestTarget]:
    say("\n## 1. Ingest, no worker running (wrk, 1 thread, closed loop)")
    targets = start_ingest_targets(o, st, notes)
    specs: dict[str, tuple[LoadSpec, LoadSpec]] = {
        t.key: (
            LoadSpec(auth=t.node.auth, prefix=f"s{t.key}", batch=1, pool=20_000),
            LoadSpec(auth=t.node.auth, prefix=f"b{t.key}", batch=o.batch, pool=400),
        )
        for t in targets
    }

    def wrk(t: IngestTarget, batch: bool, seconds: float) -> tuple[WrkResult, dict[str, float]]:
        spec = specs[t.key][1 if batch else 0]
        window = CpuWindow(t.cpu_groups(st))
        r = _load.run_wrk(
            t.node.base_url,
            spec,
            connections=o.batch_connections if batch else o.connections,
            duration=seconds,
            workdir=st.workdir,
            server_pid=t.node.pid,
        )
        cpu = window.stop()
        cpu["wrk"] = round(r.wrk_cpu_s / max(0.1, time.monotonic() - window.t0), 3)
        return r, cpu

    say(f"  warm-up: {o.warmup:.0f}s of single events and of batches per target")
    for t in targets:
        wrk(t, False, o.warmup)
        wrk(t, True, o.warmup)
    say(
        f"  {o.repeats} round(s) of {o.duration:.0f}s runs; {o.connections} connections for "
        f"single events, {o.batch_connections} for {o.batch}-event batches; the order of the "
        "targets rotates"
    )
    for i in range(o.repeats):
        say(f" round {i + 1}/{o.repeats}")
        shift = i % len(targets)
        for t in targets[shift:] + targets[:shift]:
            for kind, series, per_request in (("single", t.single, 1), ("batch", t.batch, o.batch)):
                r, cpu = wrk(t, per_request > 1, o.duration)
                series.runs.append(r)
                t.cpu[kind].append(cpu)
                show(
                    f"{t.label}, {per_request} event{'s' if per_request > 1 else ''}",
                    r,
                    per_request,
                    cpu,
                )
    for t in targets:
        st.stop(t.node.proc)
    for name in list(st.databases):  # the ingest logs hold millions of rows: free the disk
        st.drop_database(name)
    st.drop_streams()
    return targets


# --------------------------------------------------------------------------------------------
# 2. processing: one worker against two
# --------------------------------------------------------------------------------------------


@dataclass
class DrainRun:
    workers: int
    events: int
    push_events_per_s: float  # ingest into the api with no worker (8 concurrent 100-event POSTs)
    drained: bool = False
    stalled: bool = False
    seconds: float = 0.0  # from starting the worker processes until log_lag 0
    split_s: float | None = None  # until the workers held every partition in fair shares
    lag_at_split: int | None = None
    lost_partitions: bool = False  # our workers did not hold every partition (see follow)
    cpu: dict[str, float] = field(default_factory=dict)  # cores while draining
    shares: tuple[int, ...] = ()
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, lag, held)

    @property
    def rate(self) -> float:
        """Events/s from starting the workers (their boot and the split included)."""
        return self.events / self.seconds if self.drained and self.seconds > 0 else 0.0

    @property
    def rate_after_split(self) -> float:
        """Events/s from the moment every partition was held in fair shares."""
        if not self.drained or self.split_s is None or self.lag_at_split is None:
            return 0.0
        span = self.seconds - self.split_s
        return self.lag_at_split / span if span > 0.2 else 0.0

    @property
    def clean(self) -> bool:
        return self.drained and not self.lost_partitions


def drain_run(o: Options, st: Stack, workers: int) -> DrainRun:
    database = st.create_database(f"proc_w{workers}")
    try:
        env = st.env(st.pg_url(database))
        api = st.http(f"api-w{workers}", "api", env, st.prepare(env))
        users = max(1, o.events // o.events_per_user)
        push = _load.push_events(
            api.base_url, api.auth, prefix="d", events=o.events, batch=o.batch, users=users
        )
        if push.failures or push.events != o.events:
            raise RuntimeError(f"backlog: {push.failures} failed requests ({api.log})")
        first = health(api)
        if first is None or first.lag != o.events:
            raise RuntimeError(f"backlog: log_lag {first.lag if first else None}, not {o.events}")
        push_s = push.finished - push.started
        run = DrainRun(workers, o.events, o.events / push_s if push_s > 0 else 0.0)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            window = CpuWindow(
                {
                    "workers": lambda: [p.pid for p in procs],
                    "api": lambda: [api.pid],
                    "PostgreSQL": lambda: st.backends(database),
                }
            )
            t0 = time.monotonic()
            procs += [st.worker(f"worker-w{workers}-{i + 1}", env) for i in range(workers)]
            follow(o, st, database, api, run, t0, procs)
            run.cpu = window.stop()
        finally:
            for proc in procs:
                st.stop(proc)
            st.stop(api.proc)
        return run
    finally:
        st.drop_database(database)


def follow(
    o: Options,
    st: Stack,
    database: str,
    api: Node,
    run: DrainRun,
    t0: float,
    procs: Sequence[subprocess.Popen[bytes]],
) -> None:
    """Poll ``log_lag`` and the leases until the lag is 0, it stalls, or time runs out.

    A check on the leases: the run "lost partitions" when, in two samples in a row, one of
    our workers held a share that no count of our workers explains, or partitions went
    unheld after the split (one sample alone can catch a rebalance half done). The
    timing would then measure the leases, not the processing.
    """
    fair = math.ceil(o.partitions / run.workers)
    normal = {math.ceil(o.partitions / k) for k in range(1, run.workers + 1)}
    last_lag, last_change = run.events, t0
    abnormal = 0  # consecutive samples with partitions taken from ours
    with httpx.Client(base_url=api.base_url, timeout=10.0) as client:
        while True:
            got = _load.sample(client)
            leases = st.leases_of(database)
            now = time.monotonic()
            run.shares = leases.shares
            taken = any(share not in normal for share in leases.shares) or (
                run.split_s is not None and leases.held < o.partitions
            )
            abnormal = abnormal + 1 if taken else 0
            run.lost_partitions = run.lost_partitions or abnormal >= 2
            if got is not None:
                run.timeline.append((round(now - t0, 2), got.lag, leases.held))
                if got.lag != last_lag:
                    last_lag, last_change = got.lag, now
                split = (
                    len(leases.shares) == run.workers
                    and leases.held == o.partitions
                    and max(leases.shares) <= fair
                )
                if split and run.split_s is None:
                    run.split_s, run.lag_at_split = now - t0, got.lag
                if got.lag == 0:
                    run.drained, run.seconds = True, got.t - t0
                    return
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {st.workdir}")
            if now - last_change > o.stall_timeout:
                run.stalled, run.seconds = True, now - t0
                return
            if now - t0 > o.drain_timeout:
                run.seconds = now - t0
                return
            # Counting the lag is a query over the log: poll briskly at first, then gently.
            time.sleep(0.2 if now - t0 < 5.0 else 0.5)


def describe(run: DrainRun) -> str:
    shares = "+".join(str(s) for s in run.shares) or "none"
    split = (
        f"split {'+'.join(str(s) for s in run.shares)} after {run.split_s:.1f}s "
        f"(lag then {run.lag_at_split:,})"
        if run.split_s is not None
        else "never held every partition in fair shares"
    )
    lost = (
        "; LOST PARTITIONS: not every partition held in fair shares" if run.lost_partitions else ""
    )
    if run.drained:
        after = f", {run.rate_after_split:,.0f}/s after the split" if run.rate_after_split else ""
        head = f"log_lag 0 after {run.seconds:.1f}s -> {run.rate:,.0f} events/s from start{after}"
    elif run.stalled:
        lag = f"{run.timeline[-1][1]:,}" if run.timeline else "?"
        head = (
            f"STALLED: log_lag stuck at {lag} ({run.seconds:.0f}s after the start) with "
            f"{shares} partitions held"
        )
    else:
        head = f"NOT drained within {run.seconds:.0f}s"
    cores = f"\n      cores busy while draining: {cores_text(run.cpu)}" if run.cpu else ""
    return f"{head}; {split}{lost}{cores}"


def run_processing(o: Options, st: Stack, notes: list[str]) -> dict[int, list[DrainRun]]:
    users = max(1, o.events // o.events_per_user)
    say(
        f"\n## 2. Processing: {o.events:,} events of {users:,} users pushed with no worker "
        f"running ({o.batch}-event POSTs, 8 concurrent)\n   into a fresh database, then 1 or "
        f"2 `tidings worker` started and timed until log_lag is 0. Time runs from\n   starting "
        f"the worker processes: their boot (~2 s of imports) and the partition split are "
        f"inside it.\n   1- and 2-worker runs alternate."
    )
    runs: dict[int, list[DrainRun]] = {1: [], 2: []}
    for i in range(o.repeats):
        say(f" round {i + 1}/{o.repeats}")
        for workers in (1, 2) if i % 2 == 0 else (2, 1):
            run = drain_run(o, st, workers)
            runs[workers].append(run)
            say(
                f"  {workers} worker{'s' if workers > 1 else ' '} (backlog pushed at "
                f"{run.push_events_per_s:,.0f} events/s): {describe(run)}"
            )
    if any(r.lost_partitions for rs in runs.values() for r in rs):
        notes.append(
            "Some processing runs lost partitions (see above): their figures measure the "
            "leases, not the processing, and the medians leave them out when they can."
        )
    return runs


def usable(runs: Sequence[DrainRun]) -> tuple[list[DrainRun], bool]:
    """The runs the medians use: drained ones that kept their partitions, else any drained
    ones (flagged)."""
    clean = [r for r in runs if r.clean]
    if clean:
        return clean, False
    return [r for r in runs if r.drained], True


def paired_ratios(runs: dict[int, list[DrainRun]]) -> tuple[float, float]:
    """Median over the rounds of (two workers / one worker), from start and after the split:
    the two runs of a round are minutes apart at most, so drift in the machine's load hits
    them more alike than it hits runs of different rounds."""
    pairs = [(a, b) for a, b in zip(runs[1], runs[2], strict=False) if a.clean and b.clean]
    return (
        med([b.rate / a.rate for a, b in pairs if a.rate]),
        med([b.rate_after_split / a.rate_after_split for a, b in pairs if a.rate_after_split]),
    )


def med(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0]
    return statistics.median(values) if values else 0.0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a > 0 and b > 0 else "-"


def ratio_or_none(a: float, b: float) -> float | None:
    return a / b if a > 0 and b > 0 else None


def report(
    o: Options,
    facts: dict[str, str],
    targets: list[IngestTarget],
    runs: dict[int, list[DrainRun]],
    notes: list[str],
) -> dict[str, Any]:
    by_key = {t.key: t for t in targets}
    pg, lite, js = by_key.get("pg"), by_key.get("sqlite"), by_key.get("nats")
    md: list[str] = []
    say(f"\n## Summary (medians of {o.repeats} round(s))")
    if targets:
        say("\nIngest, no worker running:")
        md += [
            "| Ingest (no worker) | single event: req/s · p50 · p99 | "
            f"{o.batch}-event batches: events/s · p99 |",
            "| --- | ---: | ---: |",
        ]
        for t in targets:
            s, b = t.single, t.batch
            line = (
                f"{s.rps:,.0f} req/s · p50 {s.lat('p50'):.1f} ms · p99 {s.lat('p99'):.1f} ms",
                f"{b.eps:,.0f} events/s · p99 {b.lat('p99'):.0f} ms",
            )
            say(f"  {t.label:<42} {line[0]:<42} {line[1]}")
            for kind in ("single", "batch"):
                say(f"  {'':<42} cores busy, {kind:<6}: {cores_text(t.cores(kind))}")
            md.append(f"| {t.label} | {line[0]} | {line[1]} |")
        ratios: list[tuple[str, str, str]] = []
        if pg and lite:
            ratios.append(
                (
                    "PostgreSQL / SQLite",
                    ratio(pg.single.rps, lite.single.rps),
                    ratio(pg.batch.eps, lite.batch.eps),
                )
            )
        if pg and js:
            ratios.append(
                (
                    "JetStream log / PostgreSQL log",
                    ratio(js.single.rps, pg.single.rps),
                    ratio(js.batch.eps, pg.batch.eps),
                )
            )
        if pg:
            ratios.append(
                (
                    "PostgreSQL batches vs the 100,000 events/s target",
                    "",
                    ratio(pg.batch.eps, TARGET_BATCH_EVENTS),
                )
            )
        for label, single, batch in ratios:
            say(f"  {label:<50} single {single or '-':>5}  batches {batch:>5}")
            md.append(f"| ratio: {label} | {single or '-'} | {batch} |")
        js_note = next((n for n in notes if n.startswith("JetStream:")), None)
        if js_note:
            say(f"  {js_note}")
            md.append(f"| PostgreSQL + JetStream log | {js_note} | |")

    result: dict[str, Any] = {"facts": facts, "options": {k: str(v) for k, v in vars(o).items()}}
    result["ingest"] = {
        t.key: {
            "label": t.label,
            "single": {**t.single.as_json(), "cores": t.cpu["single"]},
            "batch": {**t.batch.as_json(), "cores": t.cpu["batch"]},
        }
        for t in targets
    }
    if any(runs.values()):
        say(f"\nProcessing a {o.events:,}-event backlog (PostgreSQL, `tidings worker`):")
        md += [
            *([""] if md else []),
            f"| Processing a {o.events:,}-event backlog | events/s from starting the workers "
            "| events/s once the partitions were split | split after | runs used |",
            "| --- | ---: | ---: | ---: | :---: |",
        ]
        rates: dict[int, tuple[float, float]] = {}
        for workers, rs in runs.items():
            used, flagged = usable(rs)
            rate = med([r.rate for r in used])
            after = med([r.rate_after_split for r in used])
            split = med([r.split_s or 0.0 for r in used])
            rates[workers] = (rate, after)
            count = f"{len(used)} of {len(rs)}" + (" (lost partitions)" if flagged else "")
            label = f"{workers} worker{'s' if workers > 1 else ''}"
            say(
                f"  {label:<10} {rate:>8,.0f} events/s from start   {after:>8,.0f} events/s "
                f"after the split ({split:.1f}s)   runs used: {count}"
                if rate
                else f"  {label:<10} no run drained   runs used: {count}"
            )
            cpus = [r.cpu for r in used if r.cpu]
            if cpus:
                cores = {k: statistics.median(c[k] for c in cpus) for k in cpus[0]}
                say(f"  {'':<10} cores busy while draining: {cores_text(cores)}")
            md.append(
                f"| {label} | {rate:,.0f} | {after:,.0f} | {split:.1f} s | {count} |"
                if rate
                else f"| {label} | no run drained | | | {count} |"
            )
            result.setdefault("processing", {})[str(workers)] = {
                "events_per_s_from_start": rate,
                "events_per_s_after_split": after,
                "split_s": split,
                "runs_used": len(used),
                "lost_partitions": flagged,
                "runs": [
                    {**asdict(r), "rate": r.rate, "rate_after_split": r.rate_after_split}
                    for r in rs
                ],
            }
        (one, one_after), (two, two_after) = rates.get(1, (0, 0)), rates.get(2, (0, 0))
        paired = paired_ratios(runs)
        say(
            f"  scaling two / one workers: {ratio(two, one)} from start, "
            f"{ratio(two_after, one_after)} after the split (medians of the rounds' own ratios: "
            f"{ratio(paired[0], 1)}, {ratio(paired[1], 1)});  one worker vs the 5,000 events/s "
            "target: "
            f"{ratio(one, TARGET_PROCESSING)}"
        )
        md.append(
            f"| ratio: two / one workers | {ratio(two, one)} | {ratio(two_after, one_after)} | | |"
        )
        push = med([r.push_events_per_s for rs in runs.values() for r in rs])
        say(f"  backlog pushes (Python client, 8 x {o.batch}-event POSTs): {push:,.0f} events/s")
        result["scaling_two_over_one"] = {
            "from_start": ratio_or_none(two, one),
            "after_split": ratio_or_none(two_after, one_after),
            "median_of_round_ratios": {
                "from_start": paired[0] or None,
                "after_split": paired[1] or None,
            },
        }
        result["backlog_push_events_per_s"] = push

    say("\n## Markdown for docs/benchmarks.md\n")
    say(
        f"{facts['date']}, commit {facts.get('commit', '?')}: {facts['nproc']} cores "
        f"({facts['cpu']}), Python {facts['python']}, PostgreSQL {facts['postgresql']} at "
        f"{facts['postgresql at']}. `bench/scaleout.py{' --quick' if o.quick else ''}`: "
        f"medians of {o.repeats} round(s)"
        + (f"; wrk {o.duration:.0f} s runs" if targets else "")
        + (f"; {o.events:,}-event backlogs" if any(runs.values()) else "")
        + "."
    )
    say()
    for row in md:
        say(row)
    say()
    result["notes"] = notes
    return result


def machine_facts(st: Stack) -> dict[str, str]:
    facts = ingest.machine_facts()
    facts["postgresql"] = st.server_version()
    url = urlsplit(st.o.postgres_url)  # host and port only: the URL may hold a password
    facts["postgresql at"] = f"{url.hostname}:{url.port or 5432}"
    packages = [facts.get("packages", "")]
    for name in ("psycopg", "nats-py"):
        with contextlib.suppress(PackageNotFoundError):
            packages.append(f"{name} {version(name)}")
    facts["packages"] = ", ".join(p for p in packages if p)
    return facts


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind through the cleanup like Ctrl-C


@contextlib.contextmanager
def stack(o: Options) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="tidings-scaleout-"))
    try:
        st = Stack(o, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        yield st
    except Exception:
        st.keep_logs = True
        raise
    finally:
        st.close()


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    if not o.skip_ingest:
        _load.wrk_binary()  # fail before starting anything if wrk is missing
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    started = time.monotonic()
    notes: list[str] = []
    try:
        with stack(o) as st:
            facts = machine_facts(st)
            say("# Tidings scale-out benchmark (PostgreSQL, workers)")
            for k, v in facts.items():
                say(f"  {k}: {v}")
            say(f"  temp dir: {st.workdir}{' (kept)' if o.keep else ' (removed at the end)'}")
            say(
                f"  {'quick' if o.quick else 'default'} run: {o.repeats} round(s); "
                f"{o.partitions} log partitions; databases tidings_bench_*_{st.run_id}_*"
            )
            targets = [] if o.skip_ingest else run_ingest(o, st, notes)
            runs = {1: [], 2: []} if o.skip_processing else run_processing(o, st, notes)
            results = report(o, facts, targets, runs, notes)
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped, databases dropped", file=sys.stderr)
        return 130
    except (
        RuntimeError,
        OSError,
        psycopg.Error,
        httpx.HTTPError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        if not note.startswith("JetStream:"):
            say(f"note: {note}")
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    say(f"Whole run: {results['elapsed_s']:.0f} s")
    if o.json_out:
        o.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"JSON written to {o.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
