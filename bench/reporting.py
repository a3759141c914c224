"""Reporting benchmark: aggregation latency over many events, and what the rollups cost
the pipeline.

    .venv/bin/python bench/reporting.py [--events N] [--users U] [--repeats R]
        [--backends sqlite,postgresql] [--postgres-url URL] [--process-events M]
        [--json PATH]

1. Queries. A fresh database per backend holds N events (``--events``, default 1,000,000;
   the issue's figure is 10,000,000) of U users (default N/100) over the last 90 days,
   20 event names with a skewed mix (``event 00`` ~24% of the events, ``event 19`` 0.25%),
   bulk-loaded straight into ``events`` by ``INSERT … SELECT`` over a generated series
   (250,000 rows a transaction) with the table's secondary indexes dropped and built
   again afterwards (``_load.indexes_dropped``; SQLite's WAL checkpointed after each
   chunk); the rollups and day sketches are then computed from them
   (``store.rollups.rebuild_all``, what migrations 0016 and 0020 do). Timed, R times each
   after one warm-up call (p50/p99 of the R):
   - A: aggregations by event name and day over the last 30 whole days (the rollups);
   - B: the commonest event name's unique users over the 90 whole days up to today (the
     ``sketches`` plan: one HyperLogLog sketch per day, merged), and the same forced
     through ``event_user_days`` (an exact COUNT(DISTINCT) over the name's user-days);
   - C: the same name's unique users over 60 days in the past (today-90 to today-30);
   - the same queries computed by scanning ``events`` (the ceiling to beat), each distinct
     one ``--scan-repeats`` times (1: a single cold call, for 10M runs).
   Every answer is checked against the scan's: equal, but for the sketches' unique users,
   which must be within 5% (the error is printed).
2. Processing. M events (``--process-events``, default 20,000; 2,000 users, batches of
   1,000 as the worker reads them, dated over the last ``--process-days``: 1 for live
   traffic, 90 for a back-fill where nearly every event makes a new user-day) go through
   ``BatchProcessor`` on a
   fresh database with no hook and with the ``RollupHook``; ``--rounds`` (5) alternating rounds,
   medians; events/s and the cost of the rollups in per cent of throughput.

Targets (printed with their ratio; a miss never fails the script): aggregations p99
≤ 100 ms; rollups cost ≤ 15% of processing throughput.

Every database it creates is dropped at the end (PostgreSQL: ``tidings_bench_reporting_*``,
``WITH (FORCE)``; SQLite: a temp directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _load import Databases, indexes_dropped
from tidings.domain.ingest import LogRecord
from tidings.pipeline.processor import BatchHook, BatchProcessor
from tidings.reporting import queries
from tidings.reporting.filters import EventFilter
from tidings.reporting.rollups import RollupHook
from tidings.store import rollups
from tidings.store.database import Database
from tidings.store.profiles import ProfileStore

SECOND = 1_000_000
DAY = 86_400 * SECOND
PROJECT = 1
NAMES = 20
CHUNK = 250_000


def _today() -> int:
    now = time.time_ns() // 1000
    return now - now % DAY


def load(db: Database, events: int, users: int, now: int) -> float:
    """Write the events with INSERT … SELECT over a series; seconds taken (with rollups)."""
    sqlite = db.is_sqlite
    series = (
        "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi - 1) "
        if sqlite
        else ""
    )
    source = "s" if sqlite else "generate_series(CAST(:lo AS bigint), :hi - 1) AS s(i)"
    pad = "printf('%026d', {x})" if sqlite else "lpad(({x})::text, 26, '0')"
    # Two independent hashes of i, each 0-19; their product / 19 favours low numbers.
    mix = "(((i * 2654435761) % 4294967291 / 7) % 20) * (((i * 40503 + 12345) % 65521) % 20) / 19"
    name = f"printf('event %02d', {mix})" if sqlite else f"'event ' || lpad(({mix})::text, 2, '0')"
    user = f"((i * 2654435761) % 4294967291) % {users}"
    json_empty = "'{}'" if sqlite else "'{}'::jsonb"
    # Over the 90 days before today's midnight, to the microsecond.
    created = f"(:now - 1 - ((i * 2246822519 + 374761393) % 4294967291) * 40503 % {90 * DAY})"
    statement = sa.text(
        f"{series}INSERT INTO events (id, project_id, profile_id, message_id, name, "
        f"external_id, data, created_at, received_at) SELECT "
        f"'evt_' || {pad.format(x='i')}, {PROJECT}, 'prf_' || {pad.format(x=user)}, "
        f"'seed-' || i, {name}, 'u' || ({user}), {json_empty}, {created}, :now FROM {source}"
    )
    started = time.perf_counter()
    with indexes_dropped(db, "events"):
        for lo in range(0, events, CHUNK):
            with db.writer.begin() as conn:
                conn.execute(statement, {"lo": lo, "hi": min(events, lo + CHUNK), "now": now})
            if sqlite:
                db.checkpoint()  # the app's checkpointer thread does this; not running here
    indexed = time.perf_counter()
    with db.writer.begin() as conn:
        rollups.rebuild_all(conn)
    if sqlite:
        db.checkpoint()
    print(
        f"  loaded {events:,} events in {indexed - started:.0f} s (indexes built after), "
        f"rollups and sketches in {time.perf_counter() - indexed:.0f} s",
        flush=True,
    )
    if not sqlite:
        with db.writer.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    else:
        with db.writer.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def timed(call: Callable[[], Any], repeats: int, warm_up: bool = True) -> tuple[list[float], Any]:
    """``repeats`` timed calls after a warm-up (whose answer is returned); without the
    warm-up, the answer of the last timed call."""
    result = call() if warm_up else None
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - started) * 1000)
        if not warm_up:
            result = answer
    return times, result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def query_bench(
    db: Database, events: int, users: int, repeats: int, scan_repeats: int
) -> dict[str, Any]:
    now = _today()
    load_s = load(db, events, users, now)
    out: dict[str, Any] = {"load_s": round(load_s, 1)}
    by_day = EventFilter.build(PROJECT, now - 30 * DAY, now)
    unique = EventFilter.build(PROJECT, now - 90 * DAY, now, names=["event 00"])
    past = EventFilter.build(PROJECT, now - 90 * DAY, now - 30 * DAY, names=["event 00"])
    cases: dict[str, tuple[EventFilter, list[str], queries.Plan | None]] = {
        "A_name_day_30d": (by_day, ["event_name", "day"], None),
        "B_unique_users_90d": (unique, [], None),
        "C_unique_users_past_60d": (past, [], None),
        "B_via_user_days": (unique, [], "user_days"),
    }
    scans: dict[tuple[int, int, str], tuple[list[float], Any]] = {}  # one scan per query
    for label, (f, groups, forced) in cases.items():
        with db.reader.connect() as conn:
            fast, answer = timed(
                lambda f=f, groups=groups, forced=forced: queries.aggregate(
                    conn, f, groups, source=forced
                ),
                repeats,
            )
            key = (f.start, f.end, ",".join(groups))
            if key not in scans:
                print(f"  {label}: fast path timed; scanning the events", flush=True)
                scans[key] = timed(
                    lambda f=f, groups=groups: queries.aggregate(conn, f, groups, source="events"),
                    scan_repeats,
                    warm_up=scan_repeats > 1,
                )
            scan, ceiling = scans[key]
        error = _agree(answer, ceiling, label)
        out[label] = {
            "plan": answer.source,
            "rows": len(answer.results),
            "p50_ms": round(percentile(fast, 0.5), 2),
            "p99_ms": round(percentile(fast, 0.99), 2),
            "scan_p50_ms": round(percentile(scan, 0.5), 1),
            "scan_p99_ms": round(percentile(scan, 0.99), 1),
            "speedup": round(percentile(scan, 0.5) / max(percentile(fast, 0.5), 1e-6), 1),
            "unique_users": answer.results[0]["unique_user_count"] if not groups else None,
            "unique_users_error_pct": error,
        }
    return out


def _agree(answer: queries.Aggregation, ceiling: queries.Aggregation, label: str) -> float:
    """Check an answer against the scan's; the relative error of its unique users in per
    cent (0 but for ``sketches``, whose estimate must be within 5%)."""
    if answer.source != "sketches":
        assert answer.results == ceiling.results, label
        return 0.0
    worst = 0.0
    for got, exact in zip(answer.results, ceiling.results, strict=True):
        users = exact["unique_user_count"]
        assert {**got, "unique_user_count": users} == exact, label
        worst = max(worst, abs(got["unique_user_count"] - users) / max(users, 1))
    assert worst <= 0.05, (label, worst)
    return round(100 * worst, 2)


def _mix(i: int) -> int:
    """The event name number of ``load``'s SQL, in Python."""
    return ((i * 2654435761) % 4294967291 // 7) % 20 * (((i * 40503 + 12345) % 65521) % 20) // 19


def records(total: int, users: int, now: int, days: int) -> list[list[LogRecord]]:
    batches = []
    for start in range(0, total, 1000):
        batch = []
        for i in range(start, min(total, start + 1000)):
            batch.append(
                LogRecord(
                    seq=i + 1,
                    partition=0,
                    project_id=PROJECT,
                    kind="event",
                    payload={
                        "name": f"event {_mix(i):02d}",
                        "external_id": f"u{(i * 2654435761) % 4294967291 % users}",
                        "message_id": f"m{i}",
                        "created_at": now
                        - 1
                        - (i * 2246822519 + 374761393) % 4294967291 * 40503 % (days * DAY),
                        "data": {"total": 129.5, "sku": "abc-1"},
                    },
                    accepted_at=now,
                )
            )
        batches.append(batch)
    return batches


def processing_run(db: Database, batches: list[list[LogRecord]], hooks: list[BatchHook]) -> float:
    processor = BatchProcessor(
        db.processing_writer,
        db.reader,
        ProfileStore(db.writer, db.reader),
        concurrent=not db.is_sqlite,
        hooks=hooks,
    )
    now = _today()
    # SQLite: checkpoint the WAL every second, as ``tidings serve`` and ``tidings worker``
    # do (bootstrap's checkpointer; connections never checkpoint on their own). Without
    # it the WAL grows for the whole run and every page read searches a longer WAL index:
    # a cost that grows with what the run writes, and so weighs on the rollups' run more.
    stop = threading.Event()
    checkpointer = threading.Thread(target=_checkpoints, args=(db, stop), daemon=True)
    if db.is_sqlite:
        checkpointer.start()
    else:
        # Every run starts right after a checkpoint (PostgreSQL's next timed one is then
        # minutes away, not somewhere in one run and not another) and ends with one,
        # timed: the cost of writing back the pages the run dirtied counts, for each run.
        _pg_checkpoint(db)
    started = time.perf_counter()
    positions = 0
    try:
        for batch in batches:
            processor.process(batch, now=now, expected_positions={0: positions})
            positions = batch[-1].seq
        if db.is_sqlite:
            db.checkpoint()
        else:
            _pg_checkpoint(db)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        if checkpointer.is_alive():
            checkpointer.join()
    return sum(len(b) for b in batches) / elapsed


def _pg_checkpoint(db: Database) -> None:
    with db.writer.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("CHECKPOINT")


def _checkpoints(db: Database, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        db.checkpoint()


def processing_bench(
    dbs: Databases, backend: str, total: int, days: int, rounds: int = 5
) -> dict[str, Any]:
    batches = records(total, 2000, _today(), days)
    runs: dict[str, list[float]] = {"without": [], "with": []}
    for round_ in range(rounds):
        order = [("without", []), ("with", [RollupHook()])]
        if round_ % 2:
            order.reverse()
        for label, hooks in order:
            with dbs.fresh(backend, f"proc-{label}") as db:
                runs[label].append(processing_run(db, batches, hooks))
    without = statistics.median(runs["without"])
    with_ = statistics.median(runs["with"])
    # Each round's own pair (run back to back): how much the machine moved the figure.
    pairs = [100 * (1 - w / o) for o, w in zip(runs["without"], runs["with"], strict=True)]
    return {
        "events": total,
        "without_eps": round(without),
        "with_eps": round(with_),
        "cost_pct": round(100 * (1 - with_ / without), 1),
        "round_cost_pct": [round(c, 1) for c in pairs],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=0, help="default: events / 100")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--scan-repeats",
        type=int,
        default=0,
        help="timed scans of the events per query (default: repeats / 10, at least 3; "
        "1: a single cold call, no warm-up, for 10M-event runs)",
    )
    parser.add_argument("--process-events", type=int, default=20_000)
    parser.add_argument(
        "--process-days",
        type=int,
        default=1,
        help="processed events' created_at spread over this many days before today (1: "
        "live traffic; 90: a back-fill, where nearly every event is a new user-day)",
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-processing", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="processing: alternating rounds without and with the rollups (medians)",
    )
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    users = opts.users or max(1, opts.events // 100)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}",
        "events": opts.events,
        "users": users,
    }
    with tempfile.TemporaryDirectory() as tmp:
        dbs = Databases(opts.postgres_url, Path(tmp), prefix="tidings_bench_reporting")
        try:
            for backend in opts.backends.split(","):
                result: dict[str, Any] = {}
                if not opts.skip_queries:
                    with dbs.fresh(backend, "queries") as db:
                        result["queries"] = query_bench(
                            db,
                            opts.events,
                            users,
                            opts.repeats,
                            opts.scan_repeats or max(3, opts.repeats // 10),
                        )
                    for label, q in result["queries"].items():
                        if not isinstance(q, dict):
                            continue
                        print(
                            f"{backend:10} {label:24} {q['plan']:9} p50 {q['p50_ms']:8.2f} ms  "
                            f"p99 {q['p99_ms']:8.2f} ms (target 100 ms: {q['p99_ms'] / 100:.2f}x)  "
                            f"scan p50 {q['scan_p50_ms']:9.1f} ms  speed-up {q['speedup']}x"
                            f"  users error {q['unique_users_error_pct']}%"
                        )
                    seconds = result["queries"]["load_s"]
                    print(f"{backend:10} load of {opts.events:,} events: {seconds} s")
                if not opts.skip_processing:
                    p = processing_bench(
                        dbs, backend, opts.process_events, opts.process_days, opts.rounds
                    )
                    result["processing"] = p
                    print(
                        f"{backend:10} processing (over {opts.process_days} d) "
                        f"{p['without_eps']:,} ev/s without rollups, "
                        f"{p['with_eps']:,} with: cost {p['cost_pct']}% "
                        f"(target 15%: {p['cost_pct'] / 15:.2f}x); each round's pair: "
                        f"{min(p['round_cost_pct'])}% to {max(p['round_cost_pct'])}%"
                    )
                report[backend] = result
        finally:
            dbs.close()
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
