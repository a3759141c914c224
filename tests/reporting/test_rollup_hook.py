"""The rollup hook's own writes (store/rollups.py ``add_events``, ``repair_sketches``), on
SQLite and PostgreSQL: batches that mix projects, names, days and returning users; names
that a text array literal would have to quote; a stale sketch rebuilt by the next batch.
Every stored row is compared with what the events alone give."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tidings.pipeline.processor import BatchFacts
from tidings.reporting.rollups import RollupHook
from tidings.store import hll, rollups
from tidings.store.database import Database, open_database
from tidings.store.tables_reporting import event_day_sketches, event_rollups, event_user_days

DAY = 86_400_000_000
JAN1 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
# Quotes, backslashes, braces, commas, spaces, NULL spelt out, non-ASCII: what an array
# literal would have to escape.
NAMES = ["Opened", 'say "hi"', "back\\slash", "{a,b}", "NULL", "é ✓ 日本"]
PROFILES = ["prf_1", "prf_2", "prf_é", 'prf_"q"', "prf_{x}", "prf_5"]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_database(database_url)
    try:
        yield database
    finally:
        database.dispose()


def event(project_id: int, name: str, created_at: int, profile_id: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "name": name,
        "created_at": created_at,
        "profile_id": profile_id,
    }


def apply(db: Database, batch: list[dict[str, Any]]) -> None:
    with db.writer.begin() as conn:
        RollupHook().apply(
            conn, BatchFacts(events=batch, merges=[], erased=[], profiles=[]), JAN1 + 9 * DAY
        )


def expected(everything: list[dict[str, Any]]) -> tuple[set[Any], dict[Any, Any]]:
    """User-days (who had which event on which day) and rollups computed from the
    events alone."""
    user_days: set[tuple[int, str, int, str]] = set()
    rollup: dict[tuple[int, int, str], list[int]] = {}
    for e in everything:
        t = e["created_at"]
        key = (e["project_id"], e["name"], t - t % DAY, e["profile_id"])
        found = rollup.setdefault((key[0], key[2], key[1]), [0, 0, t, t])
        found[0] += 1
        found[1] += key not in user_days
        found[2] = min(found[2], t)
        found[3] = max(found[3], t)
        user_days.add(key)
    return user_days, {k: tuple(v) for k, v in rollup.items()}


def stored(db: Database) -> tuple[set[Any], dict[Any, Any], dict[Any, Any]]:
    s = event_day_sketches.c
    with db.reader.connect() as conn:
        user_days = {
            (row.project_id, row.name, row.day, row.profile_id)
            for row in conn.execute(sa.select(event_user_days))
        }
        rollup = {
            (row.project_id, row.day, row.name): (
                row.count,
                row.users,
                row.first_seen_at,
                row.last_seen_at,
            )
            for row in conn.execute(sa.select(event_rollups))
        }
        sketches = {
            (row.project_id, row.day, row.name): row.registers
            for row in conn.execute(sa.select(s.project_id, s.day, s.name, s.registers))
        }
    return user_days, rollup, sketches


def sketches_of(user_days: set[Any]) -> dict[Any, bytes]:
    members: dict[tuple[int, int, str], list[str]] = {}
    for project_id, name, day, profile_id in user_days:
        members.setdefault((project_id, day, name), []).append(profile_id)
    return {key: hll.registers_of(users) for key, users in members.items()}


def test_batches_of_several_projects_names_and_days_count_like_the_events(
    db: Database,
) -> None:
    rng = random.Random(22)
    everything: list[dict[str, Any]] = []
    for size in (40, 1, 25, 60):  # returning users, new users, new keys, in one batch
        batch = [
            event(
                rng.choice((1, 2)),
                rng.choice(NAMES),
                JAN1 + rng.randrange(3) * DAY + rng.choice((0, 1, DAY // 2, DAY - 1)),
                rng.choice(PROFILES),
            )
            for _ in range(size)
        ]
        apply(db, batch)
        everything += batch
        user_days, rollup, sketches = stored(db)
        want_user_days, want_rollups = expected(everything)
        assert user_days == want_user_days
        assert rollup == want_rollups
        assert sketches == sketches_of(want_user_days)


def test_a_stale_sketch_is_rebuilt_by_the_next_batch(db: Database) -> None:
    first = [event(1, "Opened", JAN1 + i, p) for i, p in enumerate(PROFILES)]
    apply(db, first)
    s = event_day_sketches.c
    with db.writer.begin() as conn:  # what a merge or an erasure leaves
        conn.execute(sa.update(event_day_sketches).values(registers=None))
    with db.reader.connect() as conn:
        assert conn.execute(sa.select(s.registers)).scalars().all() == [None]
    # A batch of another key: the stale one is rebuilt from its user-days all the same.
    apply(db, [event(2, "Clicked", JAN1, "prf_9")])
    _, _, sketches = stored(db)
    assert sketches == {
        (1, JAN1, "Opened"): hll.registers_of(PROFILES),
        (2, JAN1, "Clicked"): hll.registers_of(["prf_9"]),
    }
    with db.writer.begin() as conn:
        assert rollups.repair_sketches(conn, 4) == 0  # nothing left to repair


def test_two_workers_writing_the_same_keys_at_once_lose_nothing(db: Database) -> None:
    """PostgreSQL, several workers: batches on the same (name, day) keys and the same
    users, committed concurrently from two threads, lose no count, new user or sketch
    register, and finish (a deadlock would raise). The rows are written in key order so
    that none can happen; this test seldom overlaps two upserts closely enough to catch
    an order that allows one. (On SQLite the writer lock serialises them.)"""
    rng = random.Random(7)
    batches = [
        [
            event(1, rng.choice(NAMES[:3]), JAN1 + rng.randrange(DAY), rng.choice(PROFILES))
            for _ in range(rng.randrange(1, 60))
        ]
        for _ in range(200)
    ]
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(mine: list[list[dict[str, Any]]]) -> None:
        try:
            start.wait()
            for batch in mine:
                apply(db, batch)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(batches[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    user_days, rollup, sketches = stored(db)
    want_user_days, want_rollups = expected([e for batch in batches for e in batch])
    assert user_days == want_user_days
    assert rollup == want_rollups
    assert sketches == sketches_of(want_user_days)
