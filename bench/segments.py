"""Segments benchmark: back-fill time, and the cost of real-time evaluation per event.

    .venv/bin/python bench/segments.py [--quick] [--profiles N] [--backends sqlite,postgresql]
                                       [--postgres-url URL] [--json PATH]

1. Back-fill. A fresh database per backend holds N profiles and 10 x N events (five names;
   each profile has 0-6 "Order placed", 30% of all events; dates spread evenly over the
   last 90 days), written straight into the tables with ``INSERT … SELECT`` over a
   generated series (about 16% of the profiles match). A dynamic list "placed an order at
   least 3 times in the last 30 days" is created, and ``Backfill`` (what the worker runs)
   computes it to ``ready``: members, facts, timers. Timed from creation to ready. A
   sample of profiles is then checked against the Python evaluator.
2. Real-time evaluation. Fresh databases with P1 and P2 profiles (10 events each); the
   same stream of "Order placed" events for existing users is applied through
   ``BatchProcessor`` (batches of 500, as the worker does) with 0, 1, 10 and 100 live
   dynamic lists that read that event (different counts and windows), in rounds that
   rotate the order. Reported: events/s, the extra µs per event over no lists, and the
   ratio of that cost at P2 to P1 profiles (near 1: it does not grow with the profiles).

Targets (printed with their ratio; a miss never fails the script): back-fill ≤ 30 s on
PostgreSQL at 1,000,000 profiles and 10,000,000 events. With ``--profiles`` below that,
the time is also projected linearly to 1M (labelled as such).

Every database it creates is dropped at the end (PostgreSQL: ``tidings_bench_segments_*``,
``WITH (FORCE)``; SQLite: a temp directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _load import Databases
from tidings.domain.ingest import LogRecord
from tidings.domain.rules import evaluate, next_change, parse_rule, rule_to_json
from tidings.pipeline.processor import BatchProcessor
from tidings.segments.backfill import Backfill
from tidings.segments.realtime import RealtimeSegments, load_events, load_facts
from tidings.store.database import Database
from tidings.store.lists import ListStore
from tidings.store.profiles import ProfileStore
from tidings.store.tables import list_members, lists, segment_timers

SECOND = 1_000_000
DAY = 86_400 * SECOND
PROJECT = 1
TARGET_SECONDS = 30.0  # back-fill, PostgreSQL, 1M profiles / 10M events
TARGET_PROFILES = 1_000_000


def orders_rule(count: int = 3, days: int = 30) -> dict[str, Any]:
    raw = {
        "type": "wrapper",
        "group": "event",
        "path": "name",
        "value": "Order placed",
        "operator": "and",
        "children": [],
        "frequency": {
            "period": {"type": "rolling", "unit": "day", "value": days},
            "operator": ">=",
            "count": count,
        },
    }
    return rule_to_json(parse_rule(raw))


def _event_name(p: str, j: str) -> str:
    """The j-th event of profile p: its first k are orders, k = 0-6 by a hash of p (30%
    of all events), the others one of four names."""
    others = " ".join(
        f"WHEN {n} THEN '{name}'"
        for n, name in enumerate(("Page viewed", "Product viewed", "Cart updated"))
    )
    return (
        f"CASE WHEN {j} < ({p} * 2654435761) % 4294967296 % 7 THEN 'Order placed' "
        f"ELSE CASE ({j} + {p}) % 4 {others} ELSE 'App opened' END END"
    )


def seed(db: Database, profiles: int, events: int, now: int, *, identities: bool) -> float:
    """N profiles and ``events`` events (dated over the last 90 days), straight into the
    tables in chunks of a million rows; returns the seconds it took."""
    started = time.perf_counter()
    sqlite = db.is_sqlite
    span = 90 * 86_400  # seconds
    series = (
        "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi - 1) "
        if sqlite
        else ""
    )
    source = "s" if sqlite else "generate_series(CAST(:lo AS bigint), :hi - 1) AS s(i)"
    pid = "printf('prf_%026d', {x})" if sqlite else "'prf_' || lpad(({x})::text, 26, '0')"
    json_empty = "'{}'" if sqlite else "'{}'::jsonb"
    statements = [
        (
            profiles,
            f"{series}INSERT INTO profiles (id, project_id, external_id, data, created_at, "
            f"updated_at) SELECT {pid.format(x='i')}, {PROJECT}, 'u' || i, {json_empty}, "
            f":t0, :t0 FROM {source}",
        ),
        (
            events,
            f"{series}INSERT INTO events (id, project_id, profile_id, message_id, name, "
            "external_id, data, created_at, received_at) SELECT "
            f"{pid.format(x='i').replace('prf_', 'evt_')}, {PROJECT}, "
            f"{pid.format(x=f'i % {profiles}')}, 'seed-' || i, "
            f"{_event_name(f'(i % {profiles})', f'(i / {profiles})')}, "
            f"'u' || (i % {profiles}), {json_empty}, :now - ((i * 2246822519 + 374761393) "
            f"% 3266489917 * 40503 + (i / {profiles}) * 2654435761) % 4294967291 % {span} "
            f"* {SECOND}, :now FROM {source}",
        ),
    ]
    if identities:
        statements.append(
            (
                profiles,
                f"{series}INSERT INTO identities (project_id, kind, value, profile_id, "
                f"created_at) SELECT {PROJECT}, 'external', 'u' || i, {pid.format(x='i')}, "
                f":t0 FROM {source}",
            )
        )
    for total, sql in statements:
        for lo in range(0, total, 1_000_000):
            hi = min(total, lo + 1_000_000)
            with db.writer.begin() as conn:
                conn.execute(sa.text(sql), {"lo": lo, "hi": hi, "t0": now - 400 * DAY, "now": now})
    if sqlite:
        with db.writer.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        # What autovacuum would have done to a table this size by the time anyone
        # back-fills it: statistics, the visibility map (index-only scans) and hint bits
        # (a first read of freshly loaded rows would otherwise write them all back).
        engine = sa.create_engine(db.writer.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
    return time.perf_counter() - started


# -- 1. back-fill --------------------------------------------------------------------------------


@dataclass
class BackfillResult:
    backend: str
    profiles: int
    events: int
    seed_seconds: float
    seconds: float
    chunks: int
    members: int
    timers: int
    sample_checked: int
    sample_mismatches: int
    state: str
    load_before: float  # 1-minute load average of the machine when it started


def run_backfill(dbs: Databases, backend: str, profiles: int, chunk: int) -> BackfillResult:
    now = time.time_ns() // 1000
    with dbs.fresh(backend, "backfill") as db:
        load = os.getloadavg()[0]
        print(
            f"  {backend}: seeding {profiles:,} profiles and {10 * profiles:,} events …", flush=True
        )
        seeded = seed(db, profiles, 10 * profiles, now, identities=False)
        print(f"  {backend}: seeded in {seeded:.1f} s; back-filling …", flush=True)
        store = ListStore(db.processing_writer, db.reader)
        realtime = RealtimeSegments()
        backfill = Backfill(db.processing_writer, db.reader, realtime, chunk=chunk)
        started = time.perf_counter()
        created = store.create(
            PROJECT, name="Frequent buyers", type="dynamic", rule=orders_rule(), tags=[], now=now
        )
        backfill.run(now)
        seconds = time.perf_counter() - started
        row = store.get(PROJECT, created.id)
        assert row is not None
        with db.reader.connect() as conn:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(segment_timers)
            ).scalar_one()
            # A sample checked against the Python evaluator (members and timers).
            rng = random.Random(1)
            sample = [f"prf_{rng.randrange(profiles):026d}" for _ in range(300)]
            rule = parse_rule(orders_rule())
            facts = load_facts(conn, sample)
            history = load_events(conn, PROJECT, sample, {"Order placed"}, now - 30 * DAY)
            held = set(
                conn.execute(
                    sa.select(list_members.c.profile_id).where(
                        list_members.c.list_id == created.id,
                        list_members.c.profile_id.in_(sample),
                    )
                ).scalars()
            )
            due = dict(
                conn.execute(
                    sa.select(segment_timers.c.profile_id, segment_timers.c.due_at).where(
                        segment_timers.c.profile_id.in_(sample)
                    )
                ).all()
            )
        mismatches = 0
        for profile_id, profile in facts.items():
            own = history.get(profile_id, [])
            if evaluate(rule, profile, own, now) != (profile_id in held):
                mismatches += 1
            if next_change(rule, profile, own, now) != due.get(profile_id):
                mismatches += 1
        return BackfillResult(
            backend=backend,
            profiles=profiles,
            events=10 * profiles,
            seed_seconds=seeded,
            seconds=seconds,
            chunks=backfill.chunks,
            members=row.users_count,
            timers=int(count),
            sample_checked=len(facts),
            sample_mismatches=mismatches,
            state=row.state,
            load_before=load,
        )


# -- 2. real-time evaluation ------------------------------------------------------------------


@dataclass
class IncrementalRun:
    backend: str
    profiles: int
    lists: int
    events: int
    seconds: float
    evaluations: int


def _live_lists(db: Database, count: int, now: int) -> list[int]:
    """``count`` ready dynamic lists reading "Order placed" (counts 1-10, windows 7-37
    days). Marked ready without a back-fill: the cost measured is the real-time path."""
    rows = []
    for n in range(count):
        rows.append(
            {
                "project_id": PROJECT,
                "name": f"Orders {n}",
                "type": "dynamic",
                "rule": orders_rule(1 + n % 10, 7 + 3 * (n // 10)),
                "state": "ready",
                "version": 1,
                "users_count": 0,
                "tags": [],
                "created_at": now,
                "updated_at": now,
                "backfill_version": 1,
                "backfill_cursor": "prf_~",
            }
        )
    if not rows:
        return []
    with db.writer.begin() as conn:
        conn.execute(sa.insert(lists), rows)
        return list(
            conn.execute(sa.select(lists.c.id).where(lists.c.deleted_at.is_(None))).scalars()
        )


def _clean(db: Database, marker: str) -> None:
    with db.writer.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE message_id LIKE :m"), {"m": f"{marker}%"})
        conn.execute(
            sa.text("DELETE FROM event_message_ids WHERE message_id LIKE :m"), {"m": f"{marker}%"}
        )
        for table in ("list_members", "list_changes", "segment_timers", "lists"):
            conn.exec_driver_sql(f"DELETE FROM {table}")


def run_incremental(
    dbs: Databases, backend: str, profiles: int, stream: int, repeats: int, counts: list[int]
) -> list[IncrementalRun]:
    now = time.time_ns() // 1000
    runs: list[IncrementalRun] = []
    with dbs.fresh(backend, f"rt{profiles}") as db:
        print(f"  {backend}: seeding {profiles:,} profiles for the real-time runs …", flush=True)
        seed(db, profiles, 10 * profiles, now, identities=True)
        store = ProfileStore(db.processing_writer, db.reader)
        store.ensure_positions([0])
        rng = random.Random(5)
        users = [f"u{rng.randrange(profiles)}" for _ in range(stream)]
        ages = [rng.randrange(30 * 86_400) * SECOND for _ in range(stream)]
        seq = max(store.positions().get(0, 0), 0)
        for round_ in range(repeats):
            order = counts[round_ % len(counts) :] + counts[: round_ % len(counts)]
            for count in order:
                marker = f"r{round_}k{count}-"
                _live_lists(db, count, now)
                realtime = RealtimeSegments()
                processor = BatchProcessor(
                    db.processing_writer,
                    db.reader,
                    store,
                    concurrent=not db.is_sqlite,
                    segments=realtime,
                )
                records = []
                for n, (user, age) in enumerate(zip(users, ages, strict=True)):
                    seq += 1
                    payload = {
                        "name": "Order placed",
                        "external_id": user,
                        "message_id": f"{marker}{n}",
                        "created_at": now - age,
                        "data": {"total": 10},
                    }
                    records.append(LogRecord(seq, 0, PROJECT, "event", payload, now))
                position = records[0].seq - 1
                started = time.perf_counter()
                for start in range(0, len(records), 500):
                    batch = records[start : start + 500]
                    processor.process(batch, now, None, {0: position})
                    position = batch[-1].seq
                seconds = time.perf_counter() - started
                runs.append(
                    IncrementalRun(backend, profiles, count, stream, seconds, realtime.evaluations)
                )
                print(
                    f"    {profiles:>9,} profiles, {count:>3} lists: {stream / seconds:>8,.0f} "
                    f"events/s ({realtime.evaluations:,} evaluations; "
                    f"load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                _clean(db, marker)
    return runs


# -- report -------------------------------------------------------------------------------------


def report_backfill(results: list[BackfillResult]) -> list[str]:
    lines = [
        "| Back-fill: ≥ 3 orders in 30 days | profiles | events | seconds | µs per profile "
        "| members | timers | projected to 1M profiles | vs 30 s target (PostgreSQL, 1M) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        per = r.seconds / r.profiles * SECOND
        projected = r.seconds * TARGET_PROFILES / r.profiles
        label = f"{projected:.1f} s" if r.profiles != TARGET_PROFILES else "(measured)"
        target = (
            f"{projected / TARGET_SECONDS:.2f}x the target time"
            if r.backend == "postgresql"
            else "-"
        )
        lines.append(
            f"| {r.backend} | {r.profiles:,} | {r.events:,} | {r.seconds:.1f} | {per:.1f} | "
            f"{r.members:,} | {r.timers:,} | {label} | {target} |"
        )
    return lines


def report_incremental(runs: list[IncrementalRun], counts: list[int]) -> list[str]:
    lines: list[str] = []
    for backend in sorted({r.backend for r in runs}):
        sizes = sorted({r.profiles for r in runs if r.backend == backend})

        def median(size: int, count: int, backend: str = backend) -> float:
            return statistics.median(
                r.seconds / r.events
                for r in runs
                if r.backend == backend and r.profiles == size and r.lists == count
            )

        head = " | ".join(f"{s:,} profiles: events/s · extra µs/event" for s in sizes)
        lines += [
            "",
            f"| {backend}: live lists reading the event | {head} | extra cost, "
            f"{sizes[-1]:,} / {sizes[0]:,} profiles |",
            "| --- |" + " ---: |" * (len(sizes) + 1),
        ]
        for count in counts:
            cells, extras = [], []
            for size in sizes:
                per = median(size, count)
                extra = (per - median(size, 0)) * SECOND
                extras.append(extra)
                cells.append(f"{1 / per:,.0f} · {extra:+.0f}" if count else f"{1 / per:,.0f} · -")
            ratio = f"{extras[-1] / extras[0]:.2f}" if count and extras[0] > 0 else "-"
            lines.append(f"| {count} | {' | '.join(cells)} | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--profiles", type=int, help="back-fill profiles (events: 10x)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--chunk", type=int, default=5000, help="back-fill profiles per chunk")
    parser.add_argument("--stream", type=int, help="events in the real-time stream")
    parser.add_argument("--rt-profiles", help="the two profile counts for the real-time runs")
    parser.add_argument("--repeats", type=int, help="real-time rounds")
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    profiles = args.profiles or (50_000 if args.quick else TARGET_PROFILES)
    stream = args.stream or (2_000 if args.quick else 10_000)
    repeats = args.repeats or (1 if args.quick else 3)
    rt_sizes = (
        [int(x) for x in args.rt_profiles.split(",")]
        if args.rt_profiles
        else ([2_000, 20_000] if args.quick else [10_000, 100_000])
    )
    counts = [0, 1, 10, 100]
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"back-fill: {profiles:,} profiles, chunk {args.chunk:,}; real-time: {stream:,} events, "
        f"profiles {rt_sizes}, {repeats} round(s)",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="tidings-bench-segments-"))
    dbs = Databases(args.postgres_url, tmp, prefix="tidings_bench_segments")
    backfills: list[BackfillResult] = []
    runs: list[IncrementalRun] = []
    try:
        if not args.skip_backfill:
            print("Back-fill", flush=True)
            for backend in backends:
                result = run_backfill(dbs, backend, profiles, args.chunk)
                print(
                    f"  {backend}: {result.seconds:.1f} s, {result.chunks} chunks, "
                    f"{result.members:,} members, {result.timers:,} timers, state {result.state}, "
                    f"sample {result.sample_checked} checked / {result.sample_mismatches} wrong; "
                    f"machine load {result.load_before:.1f} before, "
                    f"{os.getloadavg()[0]:.1f} after",
                    flush=True,
                )
                backfills.append(result)
        if not args.skip_incremental:
            print("Real-time evaluation", flush=True)
            for backend in backends:
                for size in rt_sizes:
                    runs += run_incremental(dbs, backend, size, stream, repeats, counts)
    finally:
        dbs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    if backfills:
        print("\n".join(report_backfill(backfills)))
    if runs:
        print("\n".join(report_incremental(runs, counts)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "backfill": [asdict(b) for b in backfills],
                    "incremental": [asdict(r) for r in runs],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
