"""Ingest benchmark: the real Tidings server against a bare Starlette + uvicorn echo.

    .venv/bin/python bench/ingest.py [--duration S] [--repeats N] [--quick]

In one run, on one machine, it starts a fresh Tidings server (new temp dir + SQLite database)
and the bare echo of ``bench/echo_app.py`` (same uvicorn settings), drives both with wrk on
loopback, and reports req/s and latency for single-event ingest, 100-event batches and the
echo, the processing rate, and whether processing keeps up with a sustained 5,000 events/s.
Targets are printed with their ratio to the target; a miss never makes the script fail.
See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

import _load
import _profile
from _load import LoadSpec, Sample, WrkResult

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TARGET_SINGLE_VS_ECHO = 0.50
TARGET_BATCH_EVENTS = 100_000.0
TARGET_P99_MS = 25.0
TARGET_PROCESSING = 5_000.0


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    repeats: int
    connections: int
    batch_connections: int
    paced_connections: int
    batch: int
    events: int
    events_per_user: int
    sustained_seconds: float
    sustained_rate: float
    sustained_batch: int
    drain_timeout: float
    warmup: float
    stand_in: bool
    profile: Path | None
    env: dict[str, str]
    keep: bool
    json_out: Path | None
    quick: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        description="Tidings ingest benchmark (real server vs. bare Starlette echo).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="short run (~1 min), rougher figures")
    p.add_argument("--duration", type=float, help="seconds per load run (default 10, quick 3)")
    p.add_argument("--repeats", type=int, help="runs per scenario; medians reported (3, quick 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections, single events")
    p.add_argument("--batch-connections", type=int, default=16, help="wrk connections, batches")
    p.add_argument("--paced-connections", type=int, default=256, help="wrk connections, paced")
    p.add_argument("--batch", type=int, default=100, help="events per request in batch runs")
    p.add_argument("--events", type=int, help="backlog for the processing rate (200k, quick 50k)")
    p.add_argument("--events-per-user", type=int, default=10, help="backlog: events per user")
    p.add_argument("--sustained-seconds", type=float, help="sustained-load run (30, quick 10)")
    p.add_argument("--sustained-rate", type=float, default=5000.0, help="offered events/s")
    p.add_argument("--sustained-batch", type=int, default=10, help="events/request, sustained")
    p.add_argument("--drain-timeout", type=float, help="max wait for log_lag 0 (120, quick 60)")
    p.add_argument("--stand-in", action="store_true", help="the echo app plays the server")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the server (extra runs)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="server env var")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs, scripts)")
    p.add_argument("--json", dest="json_out", type=Path, help="also write the results as JSON")
    a = p.parse_args(argv)
    q = bool(a.quick)
    env: dict[str, str] = {}
    for item in a.env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return Options(
        duration=a.duration if a.duration is not None else (3.0 if q else 10.0),
        repeats=max(1, a.repeats if a.repeats is not None else (2 if q else 3)),
        connections=a.connections,
        batch_connections=a.batch_connections,
        paced_connections=a.paced_connections,
        batch=a.batch,
        events=a.events if a.events is not None else (50_000 if q else 200_000),
        events_per_user=max(1, a.events_per_user),
        sustained_seconds=a.sustained_seconds or (10.0 if q else 30.0),
        sustained_rate=a.sustained_rate,
        sustained_batch=a.sustained_batch,
        drain_timeout=a.drain_timeout or (60.0 if q else 120.0),
        warmup=1.0 if q else 2.0,
        stand_in=bool(a.stand_in),
        profile=a.profile,
        env=env,
        keep=bool(a.keep),
        json_out=a.json_out,
        quick=q,
    )


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    base_url: str
    proc: subprocess.Popen[bytes]
    auth: str
    log: Path
    threads: dict[int, str] = field(default_factory=dict)  # tid -> Python thread name

    @property
    def pid(self) -> int:
        return self.proc.pid


class Processes:
    """Every process the harness starts, so that all of them are stopped in the end."""

    def __init__(self, workdir: Path, opts: Options) -> None:
        self.workdir = workdir
        self.o = opts
        self.running: list[Target] = []
        self.public_key = "pk_stand_in"
        self.server_env = _server_env(workdir, opts.env)
        self.starts = 0

    def stop(self, target: Target) -> None:
        _load.stop_process(target.proc)
        if target in self.running:
            self.running.remove(target)

    def stop_all(self) -> None:
        for t in list(self.running):
            self.stop(t)

    def _launch(self, name: str, cmd: list[str], env: dict[str, str], auth: str) -> Target:
        self.starts += 1
        port = _load.free_port()
        log = self.workdir / f"{name}-{self.starts}.log"
        proc = _load.start_process(
            [*cmd, "--host", "127.0.0.1", "--port", str(port)], env=env, log=log
        )
        target = Target(name, f"http://127.0.0.1:{port}", proc, auth, log)
        self.running.append(target)
        _load.wait_ready(target.base_url, proc, timeout=60, log=log)
        return target

    def echo(self, name: str = "echo") -> Target:
        cmd = [sys.executable, str(HERE / "echo_app.py")]
        return self._launch(name, cmd, dict(os.environ), "Bearer pk_stand_in")

    def prepare_server(self) -> None:
        """Fresh schema and a project whose public key the load uses."""
        if self.o.stand_in:
            return
        _cli(self.server_env, self.workdir, "migrate")
        out = _cli(self.server_env, self.workdir, "project", "create", "--name", "bench", "--json")
        line = next((ln for ln in reversed(out.splitlines()) if ln.strip().startswith("{")), "")
        try:
            self.public_key = str(json.loads(line)["public_key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"unexpected `project create --json` output:\n{out}") from exc

    def server(self, *, worker: bool = True) -> Target:
        if self.o.stand_in:
            return self.echo("stand-in")
        env = dict(self.server_env)
        if not worker:
            env["TIDINGS_RUN_WORKER"] = "false"
        cmd = [sys.executable, "-m", "tidings", "serve"]
        target = self._launch("server", cmd, env, f"Bearer {self.public_key}")
        target.threads = _profile.thread_names(target.pid)
        return target


def _server_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = f"sqlite:///{workdir / 'tidings.db'}"
    env["TIDINGS_DEMO_PROJECT"] = "false"
    env.update(extra)
    return env


def _cli(env: dict[str, str], workdir: Path, *args: str, timeout: float = 120) -> str:
    cmd = [sys.executable, "-m", "tidings", *args]
    r = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"`tidings {' '.join(args)}` failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def sanity_check(target: Target, batch: int) -> None:
    """A single-event and a full-batch POST must be accepted before anything is timed."""
    headers = {"Authorization": target.auth, "Content-Type": "application/json"}
    with httpx.Client(base_url=target.base_url, timeout=30) as client:
        for n in (1, batch):
            body = _load.make_body("sanity", 1, n, n)
            r = client.post(_load.INGEST_PATH, content=body, headers=headers)
            if r.status_code >= 300:
                raise RuntimeError(
                    f"{target.name}: POST of {n} event(s) -> {r.status_code}: {r.text[:500]}"
                )


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


@dataclass
class Series:
    """Repeated runs of one scenario; figures are medians over the runs."""

    name: str
    events_per_request: int
    runs: list[WrkResult] = field(default_factory=list)

    def med(self, fn: Callable[[WrkResult], float]) -> float:
        return statistics.median(fn(r) for r in self.runs) if self.runs else 0.0

    @property
    def rps(self) -> float:
        return self.med(lambda r: r.rps)

    @property
    def eps(self) -> float:
        return self.rps * self.events_per_request

    def lat(self, key: str) -> float:
        return self.med(lambda r: r.lat_ms[key])

    @property
    def late(self) -> float:
        return self.med(lambda r: r.late / r.paced if r.paced else 0.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "events_per_s": self.eps,
            "p50_ms": self.lat("p50"),
            "p99_ms": self.lat("p99"),
            "runs": [
                {
                    "rps": r.rps,
                    "p50_ms": r.lat_ms["p50"],
                    "p90_ms": r.lat_ms["p90"],
                    "p99_ms": r.lat_ms["p99"],
                    "max_ms": r.lat_ms["max"],
                    "errors": r.errors,
                    "server_cores": r.server_cores,
                    "late": r.late,
                    "paced": r.paced,
                }
                for r in self.runs
            ],
        }


class Bench:
    def __init__(self, opts: Options, workdir: Path) -> None:
        self.o = opts
        self.workdir = workdir
        self.notes: list[str] = []

    def say(self, msg: str = "") -> None:
        print(msg, flush=True)

    def drain(self, target: Target, label: str, timeout: float | None = None) -> _load.DrainResult:
        with httpx.Client(base_url=target.base_url, timeout=10.0) as client:
            d = _load.wait_for_lag_zero(client, timeout=timeout or self.o.drain_timeout)
        if d.start_lag:
            state = "drained" if d.drained else "NOT drained"
            rate = f" (processing ~{d.rate():,.0f} events/s)" if d.seconds >= 1.0 else ""
            self.say(
                f"    {state}: log_lag {d.start_lag:,} -> {d.end_lag:,} in {d.seconds:.1f}s"
                f"{rate} after {label}"
            )
        if not d.drained:
            self.notes.append(
                f"log_lag did not reach 0 within {d.seconds:.0f}s after {label}; "
                "the next run overlapped with processing."
            )
        return d

    def wrk(
        self,
        target: Target,
        spec: LoadSpec,
        connections: int,
        duration: float,
        during: Callable[[], None] | None = None,
    ) -> WrkResult:
        return _load.run_wrk(
            target.base_url,
            spec,
            connections=connections,
            duration=duration,
            workdir=self.workdir,
            server_pid=target.pid,
            during=during,
        )

    def show(self, label: str, target: Target, r: WrkResult, per_request: int = 1) -> None:
        eps = f" = {r.rps * per_request:,.0f} events/s" if per_request > 1 else ""
        err = f"  ERRORS {r.errors}" if r.error_count else ""
        late = f"  late>2ms {r.late / r.paced:.1%}" if r.paced else ""
        busy = sorted(r.thread_cpu_s.items(), key=lambda kv: -kv[1][1])
        split = ", ".join(
            f"{_thread_label(target, tid, name)} {cpu / r.duration_s:.2f}"
            for tid, (name, cpu) in busy[:4]
            if cpu > 0.02 * r.duration_s
        )
        self.say(
            f"  {label:<27}{r.rps:>8,.0f} req/s{eps}  p50 {r.lat_ms['p50']:.1f} ms  "
            f"p99 {r.lat_ms['p99']:.1f} ms  max {r.lat_ms['max']:.0f} ms{late}{err}"
        )
        m = r.machine
        others = m.get("busy", 0.0) - r.server_cores - r.wrk_cpu_s / r.duration_s
        noise = f"; steal {m['steal']:.2f}" if m.get("steal", 0.0) >= 0.05 else ""
        self.say(
            f"  {'':<27}cores busy: server {r.server_cores:.2f}"
            f"{' (' + split + ')' if split else ''}, wrk {r.wrk_cpu_s / r.duration_s:.2f}, "
            f"rest {max(0.0, others):.2f}, idle {m.get('idle', 0.0):.2f}{noise}"
        )


def _thread_label(target: Target, tid: int, name: str) -> str:
    if tid in target.threads:
        return target.threads[tid].replace("tidings-", "").replace("MainThread", "main")
    return "main" if tid == target.pid else f"{name}:{tid}"


@contextlib.contextmanager
def profiling(o: Options, target: Target, name: str, seconds: float) -> Iterator[None]:
    """py-spy twice at once: every non-idle thread, and only the GIL holder."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    if o.profile is not None:
        o.profile.mkdir(parents=True, exist_ok=True)
        for suffix, gil in (("", False), ("-gil", True)):
            out = o.profile / f"{name}{suffix}.txt"
            proc = _profile.start(target.pid, seconds, out, gil=gil)
            if proc is None:
                print("  (py-spy is not installed: .venv/bin/pip install py-spy)")
                break
            started.append((proc, out))
        time.sleep(0.3)
    try:
        yield
    finally:
        for proc, out in started:
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                _load.stop_process(proc)
            print(f"  py-spy: {out}")
            print("    " + _profile.summarize(out).replace("\n", "\n    "), flush=True)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    echo: Series
    single: Series
    batch: Series
    paced: Series
    half_rate: float = 0.0
    sustained: dict[str, Any] = field(default_factory=dict)
    processing: dict[str, Any] = field(default_factory=dict)


def run(o: Options, b: Bench, procs: Processes) -> Results:
    echo = procs.echo()
    procs.prepare_server()
    server = procs.server()
    sanity_check(server, o.batch)
    b.drain(server, "the sanity check")

    echo_spec = LoadSpec(auth=echo.auth, prefix="e", batch=1, pool=20_000)
    single = LoadSpec(auth=server.auth, prefix="s", batch=1, pool=20_000)
    batch = LoadSpec(auth=server.auth, prefix="b", batch=o.batch, pool=400)
    res = Results(Series("echo", 1), Series("single", 1), Series("batch", o.batch), Series("p", 1))

    b.say(f"## Warm-up ({o.warmup:.0f}s per target)")
    b.wrk(echo, echo_spec, o.connections, o.warmup)
    b.wrk(server, single, o.connections, o.warmup)
    b.wrk(server, batch, o.batch_connections, o.warmup)
    b.drain(server, "warm-up")
    server.threads = _profile.thread_names(server.pid) or server.threads

    b.say(
        f"\n## Maximum throughput: closed loop, {o.duration:.0f}s per run, rounds interleave "
        f"echo / single / batch;\n   the server's log is drained (log_lag 0) after each run"
    )
    for i in range(1, o.repeats + 1):
        b.say(f" round {i}/{o.repeats}")
        r = b.wrk(echo, echo_spec, o.connections, o.duration)
        res.echo.runs.append(r)
        b.show(f"echo, 1 event (c={o.connections})", echo, r)
        r = b.wrk(server, single, o.connections, o.duration)
        res.single.runs.append(r)
        b.show(f"single event (c={o.connections})", server, r)
        b.drain(server, "the single-event run")
        r = b.wrk(server, batch, o.batch_connections, o.duration)
        res.batch.runs.append(r)
        b.show(f"{o.batch}-event batch (c={o.batch_connections})", server, r, o.batch)
        b.drain(server, "the batch run")

    # -- latency at half the maximum rate -----------------------------------------------
    res.half_rate = max(1.0, res.single.rps / 2)
    b.say(
        f"\n## Latency at half the maximum single-event rate: {res.half_rate:,.0f} req/s offered\n"
        f"   Method: wrk's Lua delay() gives every request a slot on one fixed schedule\n"
        f"   (1/rate apart) shared by {o.paced_connections} connections; a connection waits for\n"
        f"   its request's slot. wrk times each request from its actual send, so a request sent\n"
        f"   >2 ms after its slot ('late': no connection was free) hides queueing; figures are\n"
        f"   sound while 'late' stays near 0%."
    )
    paced = LoadSpec(auth=server.auth, prefix="p", batch=1, pool=20_000, rate=res.half_rate)
    for i in range(1, o.repeats + 1):
        r = b.wrk(server, paced, o.paced_connections, o.duration)
        res.paced.runs.append(r)
        b.show(f"paced run {i}", server, r)
        b.drain(server, "the paced run")

    res.sustained = sustained_run(o, b, server)

    # -- processing rate ------------------------------------------------------------------
    procs.stop(server)
    res.processing = processing_run(o, b, procs)
    server = procs.running[-1]

    if o.profile is not None:
        b.say(f"\n## py-spy profiles ({o.duration:.0f}s runs; sampling costs some throughput)")
        with profiling(o, server, "single", o.duration):
            b.show("single (profiled)", server, b.wrk(server, single, o.connections, o.duration))
        b.drain(server, "the profiled single run")
        with profiling(o, server, "batch", o.duration):
            r = b.wrk(server, batch, o.batch_connections, o.duration)
        b.show("batch (profiled)", server, r, o.batch)
        with profiling(o, server, "drain", min(o.duration, 10.0)):
            b.drain(server, "the profiled batch run")
    return res


def sustained_run(o: Options, b: Bench, server: Target) -> dict[str, Any]:
    rps = o.sustained_rate / o.sustained_batch
    b.say(
        f"\n## Sustained load: {o.sustained_rate:,.0f} events/s offered for "
        f"{o.sustained_seconds:.0f}s ({o.sustained_batch}-event requests, {rps:,.0f} req/s "
        f"paced as above);\n   GET /api/health sampled every 0.5s"
    )
    samples: list[Sample] = []
    next_poll = 0.0
    spec = LoadSpec(
        auth=server.auth,
        prefix="u",
        batch=o.sustained_batch,
        pool=max(1, 20_000 // o.sustained_batch),
        rate=rps,
    )
    with httpx.Client(base_url=server.base_url, timeout=5.0) as poll:

        def during() -> None:
            nonlocal next_poll
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 0.5
                got = _load.sample(poll)
                if got is not None:
                    samples.append(got)
            time.sleep(0.05)

        r = b.wrk(server, spec, o.paced_connections, o.sustained_seconds, during=during)
    b.show("sustained", server, r, o.sustained_batch)
    verdict = judge_sustained(samples, o.sustained_rate)
    achieved = r.rps * o.sustained_batch
    b.say(
        f"  log_lag: max {verdict['max_lag']:,}, last {verdict['last_lag']:,}, trend over the "
        f"second half {verdict['slope']:+,.0f}/s; processed {verdict['processed_rate']:,.0f} "
        f"events/s while {achieved:,.0f}/s were accepted -> "
        + ("lag GREW" if verdict["grew"] else "kept up (lag did not grow)")
    )
    d = b.drain(server, "the sustained run")
    return {**verdict, "achieved_events_per_s": achieved, "drain_after_s": d.seconds}


def judge_sustained(samples: list[Sample], rate: float) -> dict[str, Any]:
    """Did ``log_lag`` grow? Judged on the second half of the run (start-up excluded).

    "Grew" = an upward trend above 2% of the offered rate *and* a final lag above one
    second of offered load.
    """
    if len(samples) < 2:
        return {"max_lag": 0, "last_lag": 0, "slope": 0.0, "grew": False, "processed_rate": 0.0}
    second_half = samples[len(samples) // 2 :]
    trend = _load.slope([(s.t, s.lag) for s in second_half])
    last = samples[-1].lag
    return {
        "max_lag": max(s.lag for s in samples),
        "last_lag": last,
        "slope": trend,
        "grew": trend > 0.02 * rate and last > rate,
        "processed_rate": _load.processing_rate(samples),
        "samples": [(round(s.t - samples[0].t, 2), s.lag) for s in samples],
    }


def processing_run(o: Options, b: Bench, procs: Processes) -> dict[str, Any]:
    """Backlog N events with the worker off, then time the worker until log_lag is 0."""
    b.say(
        f"\n## Processing rate: restart the server without its worker "
        f"(TIDINGS_RUN_WORKER=false),\n   push {o.events:,} events of "
        f"{max(1, o.events // o.events_per_user):,} users ({o.batch}-event requests, 8 concurrent, "
        f"Python client),\n   restart it with the worker, time until log_lag is 0"
    )
    server = procs.server(worker=False)
    users = max(1, o.events // o.events_per_user)
    push = _load.push_events(
        server.base_url, server.auth, prefix="d", events=o.events, batch=o.batch, users=users
    )
    push_s = push.finished - push.started
    b.say(
        f"  pushed {push.events:,} events in {push_s:.1f}s = {push.events / push_s:,.0f} "
        f"events/s accepted with no worker running ({push.failures} failed requests, "
        f"{push.retries} retried 503s)"
    )
    procs.stop(server)
    t_start = time.monotonic()
    server = procs.server(worker=True)
    ready_s = time.monotonic() - t_start
    d = b.drain(server, "the restart", timeout=max(o.drain_timeout, 300.0))
    # The worker starts while the server boots, so time runs from "ready"; whatever it did
    # before that only flatters the rate a little (the counter-based rate has no such bias).
    # Already (nearly) 0 at the first reading: all we know is that it took less than the
    # restart plus the first poll, so the rate is only a lower bound.
    lower_bound = d.seconds < 0.5
    span = ready_s + d.seconds if lower_bound else d.seconds
    rate = push.events / span if d.drained and span > 0 else 0.0
    if d.drained:
        b.say(
            f"  {push.events:,}-event backlog: log_lag was {d.start_lag or 0:,} when the server "
            f"was ready ({ready_s:.1f}s after the restart) and 0 {d.seconds:.1f}s later -> "
            f"{'>= ' if lower_bound else ''}{rate:,.0f} events/s "
            f"(processed counter: {d.rate():,.0f}/s)"
        )
    else:
        b.say(f"  log_lag did NOT reach 0 within {d.seconds:.0f}s (last {d.end_lag})")
    return {
        "events": push.events,
        "backlog": push.events,
        "lag_when_ready": d.start_lag,
        "ingest_without_worker_events_per_s": push.events / push_s if push_s > 0 else 0.0,
        "drained": d.drained,
        "seconds": d.seconds,
        "restart_s": ready_s,
        "rate": rate,
        "rate_is_lower_bound": lower_bound,
        "counter_rate": d.rate(),
    }


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def verdict(value: float, target: float, higher_is_better: bool = True) -> tuple[str, float]:
    if value <= 0:
        return "FAIL", 0.0
    ratio = value / target if higher_is_better else target / value
    return ("PASS" if ratio >= 1.0 else "FAIL"), ratio


def report(o: Options, res: Results, facts: dict[str, str]) -> dict[str, Any]:
    echo, single, batch, paced = res.echo, res.single, res.batch, res.paced
    ratio_single = single.rps / echo.rps if echo.rps else 0.0
    sus, proc = res.sustained, res.processing
    v_single = verdict(ratio_single, TARGET_SINGLE_VS_ECHO)
    v_batch = verdict(batch.eps, TARGET_BATCH_EVENTS)
    v_p99 = verdict(paced.lat("p99"), TARGET_P99_MS, higher_is_better=False)
    v_proc = verdict(proc.get("rate", 0.0), TARGET_PROCESSING)
    v_sus = ("FAIL" if sus.get("grew") else "PASS", 0.0)

    print(f"\n## Summary (medians of {o.repeats} run(s))")
    print(f"  echo           {echo.rps:>9,.0f} req/s")
    print(f"  single event   {single.rps:>9,.0f} req/s   = {ratio_single:.2f} x echo")
    print(
        f"  {o.batch}-event batch {batch.rps:>8,.0f} req/s   = {batch.eps:,.0f} events/s "
        f"= {batch.eps / echo.rps if echo.rps else 0:.2f} x echo's req/s, "
        f"{batch.eps / single.rps if single.rps else 0:.1f} x single-event events/s"
    )

    def line(label: str, v: tuple[str, float], detail: str) -> None:
        ratio = f" {v[1]:.2f}x target" if v[1] else ""
        print(f"  [{v[0]}]{ratio}  {label}: {detail}")

    print("\n## Targets (ratio = how far past the target; < 1 is a miss)")
    line(
        "single-event ingest >= 50% of the bare echo",
        v_single,
        f"{ratio_single:.0%} ({single.rps:,.0f} vs {echo.rps:,.0f} req/s)",
    )
    line(f"{o.batch}-event batches >= 100,000 events/s", v_batch, f"{batch.eps:,.0f} events/s")
    line(
        f"p99 <= 25 ms at half the max rate ({res.half_rate:,.0f} req/s)",
        v_p99,
        f"p99 {paced.lat('p99'):.1f} ms (p50 {paced.lat('p50'):.1f} ms), achieved "
        f"{paced.rps:,.0f} req/s, late sends {paced.late:.1%}",
    )
    line(
        "processing >= 5,000 events/s",
        v_proc,
        f"{proc.get('rate', 0):,.0f} events/s ({proc.get('backlog') or 0:,} events backlog)"
        if proc.get("drained")
        else "backlog did not drain",
    )
    line(
        f"sustained {o.sustained_rate:,.0f} events/s: log_lag does not grow",
        v_sus,
        f"max lag {sus.get('max_lag', 0):,}, trend {sus.get('slope', 0):+,.0f}/s, processed "
        f"{sus.get('processed_rate', 0):,.0f}/s",
    )

    def lat(s: Series) -> str:
        return f"p50 {s.lat('p50'):.1f} ms · p99 {s.lat('p99'):.1f} ms"

    def md(v: tuple[str, float]) -> str:
        return f"{v[0]} ({v[1]:.2f}x)" if v[1] else v[0]

    rows = [
        (
            "Bare Starlette + uvicorn echo, 1 event/request",
            f"{echo.rps:,.0f} req/s · {lat(echo)}",
            "baseline",
            "—",
        ),
        (
            "Single-event `POST /api/client/events`",
            f"{single.rps:,.0f} req/s ({ratio_single:.0%} of echo) · {lat(single)}",
            "≥ 50% of echo",
            md(v_single),
        ),
        (
            f"{o.batch}-event batches",
            f"{batch.eps:,.0f} events/s ({batch.rps:,.0f} req/s) · {lat(batch)}",
            "≥ 100,000 events/s",
            md(v_batch),
        ),
        (
            f"Single events paced at half the max rate ({res.half_rate:,.0f} req/s)",
            f"{lat(paced)} · late sends {paced.late:.1%}",
            "p99 ≤ 25 ms",
            md(v_p99),
        ),
        (
            f"Processing a {proc.get('backlog') or 0:,}-event backlog (log_lag → 0)",
            f"{proc.get('rate', 0):,.0f} events/s" if proc.get("drained") else "did not drain",
            "≥ 5,000 events/s",
            md(v_proc),
        ),
        (
            f"Sustained {o.sustained_rate:,.0f} events/s offered for {o.sustained_seconds:.0f} s "
            f"({o.sustained_batch}-event requests)",
            ("log_lag grew" if sus.get("grew") else "log_lag did not grow")
            + f" (max {sus.get('max_lag', 0):,}, trend {sus.get('slope', 0):+,.0f}/s)",
            "log_lag does not grow",
            v_sus[0],
        ),
    ]
    print("\n## Markdown for docs/benchmarks.md\n")
    print(
        f"{facts['date']}, commit {facts.get('commit', '?')}: {facts['nproc']} cores "
        f"({facts['cpu']}), Python {facts['python']}, {facts['os']}, {facts.get('wrk', 'wrk')}. "
        f"`bench/ingest.py{' --quick' if o.quick else ''}`: medians of {o.repeats} x "
        f"{o.duration:.0f} s runs; wrk (1 thread) and the server share the machine over "
        f"loopback; {o.connections} connections for single events and the echo, "
        f"{o.batch_connections} for batches; SQLite database."
        + (" **Stand-in run: the echo app played the server.**" if o.stand_in else "")
    )
    print()
    print("| Scenario | Result | Target | Verdict |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    return {
        "facts": facts,
        "options": {k: str(v) for k, v in vars(o).items()},
        "echo": echo.as_json(),
        "single": single.as_json(),
        "batch": batch.as_json(),
        "paced": {**paced.as_json(), "offered_rps": res.half_rate},
        "sustained": sus,
        "processing": proc,
        "verdicts": {
            "single_vs_echo": v_single,
            "batch_events": v_batch,
            "p99_half_rate": v_p99,
            "processing": v_proc,
            "sustained": v_sus[0],
        },
    }


def machine_facts() -> dict[str, str]:
    facts = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        r = subprocess.run(
            [_load.wrk_binary(), "--version"], capture_output=True, text=True, timeout=5
        )
        facts["wrk"] = (r.stdout or r.stderr).splitlines()[0].split(" Copyright")[0].strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if r.returncode == 0:
            facts["commit"] = r.stdout.strip()
    packages = []
    for name in ("uvicorn", "starlette", "uvloop", "httptools", "sqlalchemy"):
        with contextlib.suppress(PackageNotFoundError):
            packages.append(f"{name} {version(name)}")
    facts["packages"] = ", ".join(packages)
    return facts


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    _load.wrk_binary()  # fail before starting anything if wrk is missing
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
    facts = machine_facts()
    print("# Tidings ingest benchmark")
    for k, v in facts.items():
        print(f"  {k}: {v}")
    print(f"  temp dir: {workdir}{' (kept)' if o.keep else ' (removed at the end)'}")
    print(
        f"  {'quick' if o.quick else 'default'} run: {o.repeats} x {o.duration:.0f}s per "
        f"scenario; wrk -t1 with {o.connections} connections (single events, echo), "
        f"{o.batch_connections} (batches)"
    )
    if o.stand_in:
        print("  STAND-IN: the echo app plays the server; the figures say nothing about Tidings")
    if o.env:
        print(f"  server environment: {o.env}")
    print(flush=True)

    b = Bench(o, workdir)
    procs = Processes(workdir, o)
    try:
        res = run(o, b, procs)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        print(f"logs: {workdir}", file=sys.stderr)
        o.keep = True
        return 2
    finally:
        procs.stop_all()
        if not o.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results = report(o, res, facts)
    for note in b.notes:
        print(f"note: {note}")
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"\nWhole run: {results['elapsed_s']:.0f} s")
    if o.json_out:
        o.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"JSON written to {o.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
