"""Migrations 0016 and 0020 fill the rollups and the day sketches from the events already
stored; 0023 keeps sketches in their row (PostgreSQL); 0024 narrows the user-days."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.test_migrations import empty_db  # noqa: F401  (the fixture)
from tidings.reporting import queries
from tidings.reporting.filters import EventFilter
from tidings.store import hll, migrate
from tidings.store.database import Database
from tidings.store.tables import events
from tidings.store.tables_reporting import event_day_sketches, event_rollups, event_user_days

DAY = 86_400_000_000
JAN1 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def _insert_events(db: Database, rows: list[tuple[int, str, str]]) -> None:
    with db.writer.begin() as conn:
        conn.execute(
            sa.insert(events),
            [
                {
                    "id": f"evt_{i}",
                    "project_id": 1,
                    "profile_id": profile,
                    "message_id": f"m{i}",
                    "name": name,
                    "external_id": None,
                    "anonymous_id": profile,
                    "data": {},
                    "created_at": created,
                    "received_at": created,
                    "context": None,
                }
                for i, (created, profile, name) in enumerate(rows)
            ],
        )


def test_the_migration_back_fills_the_rollups(
    empty_db: Database,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = empty_db
    migrate.upgrade(db.writer, "0009")
    rows = [
        (JAN1 + 5, "p1", "Opened"),
        (JAN1 + 9, "p1", "Opened"),
        (JAN1 + DAY - 1, "p2", "Opened"),
        (JAN1 + DAY, "p2", "Opened"),
        (JAN1 - 1, "p3", "Clicked"),  # before 1970 would floor the same way; here Dec 31
    ]
    _insert_events(db, rows)
    migrate.upgrade(db.writer)
    with db.reader.connect() as conn:
        stored = sorted(
            (r.day, r.name, r.count, r.users, r.first_seen_at, r.last_seen_at)
            for r in conn.execute(sa.select(event_rollups))
        )
        assert stored == [
            (JAN1 - DAY, "Clicked", 1, 1, JAN1 - 1, JAN1 - 1),
            (JAN1, "Opened", 3, 2, JAN1 + 5, JAN1 + DAY - 1),
            (JAN1 + DAY, "Opened", 1, 1, JAN1 + DAY, JAN1 + DAY),
        ]
        f = EventFilter.build(1, JAN1 - DAY, JAN1 + 2 * DAY)
        total = queries.aggregate(conn, f, ["event_name"])
        assert [(r["event_name"], r["count"], r["unique_user_count"]) for r in total.results] == [
            ("Clicked", 1, 1),
            ("Opened", 4, 2),
        ]
        sketches = {
            (r.day, r.name): r.registers for r in conn.execute(sa.select(event_day_sketches))
        }
        assert sketches == {
            (JAN1 - DAY, "Clicked"): hll.registers_of(["p3"]),
            (JAN1, "Opened"): hll.registers_of(["p1", "p2"]),
            (JAN1 + DAY, "Opened"): hll.registers_of(["p2"]),
        }
        # Past the exact limit, the same answer from the sketches.
        monkeypatch.setattr(queries, "EXACT_USER_DAYS", 0)
        sketched = queries.aggregate(conn, f, ["event_name"])
        assert sketched.source == "sketches"
        assert sketched.results == total.results


def test_sketches_are_stored_in_their_row_on_postgresql(
    empty_db: Database,  # noqa: F811
) -> None:
    db = empty_db
    migrate.upgrade(db.writer)
    if db.is_sqlite:
        pytest.skip("SQLite has no storage setting")
    with db.writer.begin() as conn:
        storage = conn.exec_driver_sql(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'event_day_sketches'::regclass"
            " AND attname = 'registers'"
        ).scalar()
        assert storage == "p"  # plain: in the row, uncompressed
        registers = hll.registers_of([f"p{i}" for i in range(5000)])
        conn.execute(
            sa.insert(event_day_sketches),
            {"project_id": 1, "name": "Opened", "day": JAN1, "registers": registers},
        )
        assert conn.execute(sa.select(event_day_sketches.c.registers)).scalar() == registers


def test_user_days_keep_who_and_lose_their_counts_and_get_them_back_on_downgrade(
    empty_db: Database,  # noqa: F811
) -> None:
    """0024 drops the user-days' count and first/last seen (the rollups keep them per
    key); its downgrade computes them again from the events."""
    db = empty_db
    migrate.upgrade(db.writer, "0023")
    _insert_events(
        db,
        [(JAN1 + 5, "p1", "Opened"), (JAN1 + 9, "p1", "Opened"), (JAN1 + 7, "p2", "Opened")],
    )
    with db.writer.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO event_user_days (project_id, name, day, profile_id, count, "
            f"first_seen_at, last_seen_at) VALUES (1, 'Opened', {JAN1}, 'p1', 2, {JAN1 + 5}, "
            f"{JAN1 + 9}), (1, 'Opened', {JAN1}, 'p2', 1, {JAN1 + 7}, {JAN1 + 7})"
        )
    migrate.upgrade(db.writer)
    with db.reader.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("event_user_days")}
        assert columns == {"project_id", "name", "day", "profile_id"}
        assert sorted(conn.execute(sa.select(event_user_days)).all()) == [
            (1, "Opened", JAN1, "p1"),
            (1, "Opened", JAN1, "p2"),
        ]
    migrate.downgrade(db.writer, "0023")
    with db.reader.connect() as conn:
        back = conn.exec_driver_sql(
            "SELECT profile_id, count, first_seen_at, last_seen_at FROM event_user_days "
            "ORDER BY profile_id"
        ).all()
    assert [tuple(r) for r in back] == [
        ("p1", 2, JAN1 + 5, JAN1 + 9),
        ("p2", 1, JAN1 + 7, JAN1 + 7),
    ]
