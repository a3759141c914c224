"""Journeys benchmark: timer lateness, event-to-entrance latency, steps per second.

    .venv/bin/python bench/journeys.py [--timers N] [--rate R] [--seconds S]
                                       [--backends sqlite,postgresql] [--postgres-url URL]
                                       [--workers 1,2] [--json PATH]

1. Timers. N entrances wait at a delay step whose timers are all due in the same second
   (written straight into the tables), then W journey workers (each in its own thread,
   as ``JourneyWorker.run_once`` does it: ``fire_due`` then ``run_ready`` in a loop) fire
   them. Firing (set-based, per (journey, delay step) group) completes the delay and
   readies the next step; the ready queue then runs that action step entrance by entrance
   (it sends through a counting ``Sends`` that writes nothing: messaging's own cost is
   not in these figures), and the entrance ends (a fact event into the outbox). Two
   lateness figures, p50 and p99 over all N: **fired** = when the firing transaction
   committed minus the due time; **next step ran** = when the transaction that ran the
   action step committed minus the due time. Steps/s per worker = action steps run from
   the ready queue / time from the due second to the last of them / W.
2. Event-to-entrance. A journey entered on "Signed up" (then a one-day delay); R events a
   second for S seconds, each a new user, are appended to the ingest log while the
   services' own consumer applies it (the batch hook enters them). Latency = the
   entrance's ``created_at`` (the batch's clock) minus the event's acceptance time.

Targets (printed with their ratio; a miss never fails the script): p99 timer lateness
(fired) <= 1 s, event-to-entrance p99 <= 1 s, >= 2,000 steps/s per worker.

Databases it creates are dropped at the end (PostgreSQL: ``tidings_bench_journeys_*``;
SQLite: a temp directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tidings.bootstrap import Services, build, ensure_schema
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.domain.journeys import parse_steps
from tidings.domain.sending import Enqueued, SendRequest
from tidings.journeys.engine import JourneyEngine
from tidings.settings import Settings
from tidings.store.tables import events, profiles
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_timers,
)

SECOND = 1_000_000
TARGET_LATENESS = 1.0
TARGET_ENTRANCE = 1.0
TARGET_STEPS = 2000.0


def now_us() -> int:
    return time.time_ns() // 1000


class CountingSends:
    """Counts what it is asked to send; queues nothing (the engine's cost alone)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def enqueue(self, conn: Any, request: SendRequest, now: int) -> Enqueued:
        with self.lock:
            self.count += 1
        return Enqueued.QUEUED

    def sent_count(self, conn: Any, project_id: int, profile_id: str, since: int) -> int:
        return 0


@contextmanager
def database(backend: str, postgres_url: str | None, tmp: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / ('j-' + secrets.token_hex(3) + '.db')}"
        return
    assert postgres_url, "--postgres-url (or TIDINGS_TEST_POSTGRES_URL) is needed"
    admin = sa.create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    name = f"tidings_bench_journeys_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = sa.engine.make_url(postgres_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def services_for(url: str, tmp: Path, sends: CountingSends, *, worker: bool) -> Services:
    settings = Settings(
        database_url=url,
        key_cache_ttl=0,
        sqlite_synchronous="NORMAL",
        demo_project=False,
        run_worker=worker,
        log_writer="thread",
    )
    services = build(settings, sends=sends)
    ensure_schema(services.db, auto_migrate=True)
    return services


def make_journey(services: Services, project_id: int, graph: dict[str, Any]) -> int:
    store = services.journey_store
    assert store is not None
    row = store.create(project_id, name="bench", description=None, tags=[], settings={}, now=1)
    store.put_steps(project_id, row.id, parse_steps(graph), now=2)
    store.update(project_id, row.id, now=now_us(), values={}, status="live")
    return row.id


def bench_timers(url: str, tmp: Path, count: int, workers: int) -> dict[str, Any]:
    sends = CountingSends()
    services = services_for(url, tmp, sends, worker=False)
    try:
        project = services.projects.create_project("bench", locale="en", timezone="UTC")
        journey_id = make_journey(
            services,
            project.id,
            {
                "in": {
                    "type": "entrance",
                    "data": {"trigger": "none"},
                    "children": [{"external_id": "wait"}],
                },
                "wait": {
                    "type": "delay",
                    "data": {"duration": {"seconds": 1}},
                    "children": [{"external_id": "send"}],
                },
                "send": {"type": "action", "data": {"campaign_id": 1}},
            },
        )
        steps = services.journey_store.steps(journey_id)  # type: ignore[union-attr]
        entrance_id, wait_id = steps["in"].id, steps["wait"].id
        start = now_us()
        with services.db.writer.begin() as conn:
            for lo in range(0, count, 5000):
                ids = range(lo, min(count, lo + 5000))
                conn.execute(
                    sa.insert(profiles),
                    [
                        {
                            "id": f"prf_b{i}",
                            "project_id": project.id,
                            "external_id": f"b{i}",
                            "data": {},
                            "created_at": start,
                            "updated_at": start,
                        }
                        for i in ids
                    ],
                )
                conn.execute(
                    sa.insert(journey_entrances),
                    [
                        {
                            "id": i + 1,
                            "project_id": project.id,
                            "journey_id": journey_id,
                            "entrance_step_id": entrance_id,
                            "profile_id": f"prf_b{i}",
                            "entrance_key": "",
                            "occurrence": "0",
                            "step_id": wait_id,
                            "state": "waiting",
                            "holdout": False,
                            "created_at": start,
                            "updated_at": start,
                        }
                        for i in ids
                    ],
                )
                conn.execute(
                    sa.insert(journey_path),
                    [{"entrance_id": i + 1, "step_id": wait_id, "entered_at": start} for i in ids],
                )
                conn.execute(
                    sa.insert(journey_timers),
                    [
                        {
                            "project_id": project.id,
                            "journey_id": journey_id,
                            "entrance_id": i + 1,
                            "step_id": wait_id,
                            "kind": "run",
                            "due_at": 0,
                        }
                        for i in ids
                    ],
                )
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('journey_entrances', 'id'), {count + 1})"
                )
        # The start of a second 4-5 s ahead: time for the update, VACUUM and the engines,
        # so that the workers are waiting before the timers are due (checked below).
        due = (now_us() // SECOND + 5) * SECOND
        with services.db.writer.begin() as conn:
            conn.execute(sa.update(journey_timers).values(due_at=due))
        if services.db.is_sqlite:
            with services.db.writer.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        else:
            # VACUUM too: the UPDATE above left a dead row per timer, which a database
            # that made its timers over time would not have, and which autovacuum would
            # otherwise clean up on these two cores while the timers fire.
            with services.db.writer.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("VACUUM ANALYZE")
        per_engine = [CountingSends() for _ in range(workers)]
        engines = [
            JourneyEngine(
                services.db.writer,
                services.db.reader,
                per_engine[i],
                partitions=services.log.partitions,
                clock=now_us,
            )
            for i in range(workers)
        ]
        fired_late: list[float] = []  # due -> the delay completed (the bulk firing committed)
        action_late: list[float] = []  # due -> the action step ran (its transaction committed)
        lock = threading.Lock()
        done_at = [0.0, 0.0]  # the last firing, the last action

        def work(i: int) -> None:
            engine, counter = engines[i], per_engine[i]
            while time.time() < due / SECOND:
                time.sleep(0.001)

            def fired(n: int) -> None:
                committed = time.time()
                with lock:
                    fired_late.extend([committed - due / SECOND] * n)
                    done_at[0] = max(done_at[0], committed)

            idle = 0
            while idle < 3:  # as JourneyWorker.run_once: bulk firing, then the ready queue
                n = engine.fire_due(committed=fired)
                before = counter.count
                ran = engine.run_ready(limit=500)
                committed = time.time()
                if n == 0 and ran == 0:
                    idle += 1
                    time.sleep(0.01)
                    continue
                idle = 0
                with lock:
                    action_late.extend([committed - due / SECOND] * (counter.count - before))
                    done_at[1] = max(done_at[1], committed)

        if now_us() >= due:
            raise RuntimeError("the set-up ran past the timers' due time: a late start")
        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = done_at[1] - due / SECOND
        fired_late.sort()
        action_late.sort()

        def pct(values: list[float], q: float) -> float:
            return values[max(0, int(len(values) * q) - 1)] if values else float("nan")

        return {
            "timers": count,
            "workers": workers,
            "fired": len(fired_late),
            "sends": sum(c.count for c in per_engine),
            "p50_lateness_s": pct(fired_late, 0.5),
            "p99_lateness_s": pct(fired_late, 0.99),
            "max_lateness_s": fired_late[-1] if fired_late else float("nan"),
            "p50_action_s": pct(action_late, 0.5),
            "p99_action_s": pct(action_late, 0.99),
            "fired_per_s": len(fired_late) / max(1e-9, done_at[0] - due / SECOND),
            "elapsed_s": elapsed,
            # The ready queue's own rate: action steps run entrance by entrance.
            "steps_per_s_per_worker": len(action_late) / elapsed / workers,
        }
    finally:
        services.close()


def bench_entrances(
    url: str, tmp: Path, rate: int, seconds: float, *, journey: bool = True
) -> dict[str, Any]:
    """With ``journey`` False, the same stream with no journey: the pipeline's own lag."""
    sends = CountingSends()
    services = services_for(url, tmp, sends, worker=True)
    try:
        project = services.projects.create_project("bench", locale="en", timezone="UTC")
        make = make_journey if journey else (lambda *_: 0)
        make(
            services,
            project.id,
            {
                "in": {
                    "type": "entrance",
                    "data": {"trigger": "event", "event_name": "Signed up"},
                    "children": [{"external_id": "later"}],
                },
                "later": {
                    "type": "delay",
                    "data": {"duration": {"days": 1}},
                    "children": [{"external_id": "send"}],
                },
                "send": {"type": "action", "data": {"campaign_id": 1}},
            },
        )
        services.journey_worker = None  # the hook alone: no timer is due anyway
        services.start()
        total = int(rate * seconds)
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        began = time.monotonic()
        sent = 0
        partitions = services.log.partitions
        while sent < total:
            entries = []
            for i in range(sent, min(total, sent + per_tick)):
                user = f"e{i}"
                entries.append(
                    LogEntry(
                        project_id=project.id,
                        kind="event",
                        partition=partition_of(project.id, user, partitions),
                        payload={
                            "name": "Signed up",
                            "external_id": user,
                            "message_id": f"m{i}",
                            "data": {},
                        },
                        accepted_at=now_us(),
                    )
                )
            services.log.append([AppendRequest(entries)])
            if services.consumer is not None:
                services.consumer.wake.set()
            sent += len(entries)
            ahead = began + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        appended = time.monotonic()
        deadline = appended + 300
        while time.monotonic() < deadline and services.log.pending() > 0:
            time.sleep(0.05)
        drained = time.monotonic() - appended
        if not journey:
            return {"rate": rate, "events": total, "offered_s": seconds, "drain_after_s": drained}
        with services.db.reader.connect() as conn:
            rows = conn.execute(
                sa.select(journey_entrances.c.created_at - events.c.received_at).select_from(
                    journey_entrances.join(
                        events, events.c.profile_id == journey_entrances.c.profile_id
                    )
                )
            ).all()
        latencies = sorted(r[0] / SECOND for r in rows)
        return {
            "rate": rate,
            "events": total,
            "entered": len(latencies),
            "offered_s": seconds,
            "p50_s": latencies[len(latencies) // 2],
            "p99_s": latencies[int(len(latencies) * 0.99) - 1],
            "max_s": latencies[-1],
            "drain_after_s": drained,
        }
    finally:
        services.stop() if services.started else services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--postgres-url", default=os.environ.get("TIDINGS_TEST_POSTGRES_URL"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", choices=("timers", "entrances"), default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tidings-bench-journeys-"))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    }
    try:
        for backend in args.backends.split(","):
            counts = [1] if backend == "sqlite" else [int(w) for w in args.workers.split(",")]
            for workers in counts if args.only != "entrances" else []:
                with database(backend, args.postgres_url, tmp) as url:
                    r = bench_timers(url, tmp, args.timers, workers)
                results[f"{backend}_timers_{workers}w"] = r
                late, rate = r["p99_lateness_s"], r["steps_per_s_per_worker"]
                print(
                    f"{backend:10} timers {r['timers']:>7} x{workers} worker(s): fired "
                    f"p50 {r['p50_lateness_s']:.2f} s, p99 {late:.2f} s "
                    f"(target <= {TARGET_LATENESS} s: x{late / TARGET_LATENESS:.2f}), "
                    f"{r['fired_per_s']:.0f} fired/s; next step ran p50 "
                    f"{r['p50_action_s']:.2f} s, p99 {r['p99_action_s']:.2f} s "
                    f"(x{r['p99_action_s'] / TARGET_LATENESS:.2f}); ready queue "
                    f"{rate:.0f} steps/s/worker (target >= {TARGET_STEPS:.0f}: "
                    f"x{rate / TARGET_STEPS:.2f}); {r['sends']} sends",
                    flush=True,
                )
            if args.only == "timers":
                continue
            with database(backend, args.postgres_url, tmp) as url:
                e = bench_entrances(url, tmp, args.rate, args.seconds)
            with database(backend, args.postgres_url, tmp) as url:
                base = bench_entrances(url, tmp, args.rate, args.seconds, journey=False)
            results[f"{backend}_no_journey"] = base
            print(
                f"{backend:10} the same events, no journey: the log drained "
                f"{base['drain_after_s']:.2f} s after the last append "
                f"(with the journey: {e['drain_after_s']:.2f} s)",
                flush=True,
            )
            results[f"{backend}_entrances"] = e
            print(
                f"{backend:10} entrances at {e['rate']}/s for {e['offered_s']:.0f} s: "
                f"{e['entered']}/{e['events']} entered, p50 {e['p50_s']:.3f} s, "
                f"p99 {e['p99_s']:.3f} s (target <= {TARGET_ENTRANCE} s: "
                f"x{e['p99_s'] / TARGET_ENTRANCE:.2f}), max {e['max_s']:.3f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
