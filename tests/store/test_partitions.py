"""Monthly partitions of ``events`` on PostgreSQL, and message-id de-duplication, which
moved to ``event_message_ids`` because a partitioned table cannot hold it: partitions are
kept ahead, rows caught by the default partition move into a new month's partition, and a
retried event is stored once, also when two workers apply it at the same moment."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import _admin_engine, create_project, make_services, postgres_url_or_skip
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.log.database import DatabaseLog
from tidings.pipeline.processor import BatchProcessor, StaleBatch
from tidings.settings import Settings
from tidings.store import migrate
from tidings.store.database import Database, open_database
from tidings.store.partitions import (
    DEFAULT_PARTITION,
    EventPartitions,
    ensure_partitions,
    list_partitions,
    month_bounds,
    try_lock,
)
from tidings.store.profiles import ProfileStore
from tidings.store.retention import EventUpkeep
from tidings.store.tables import event_message_ids, events

PARTITIONS = 8


def micros(year: int, month: int, day: int = 1) -> int:
    return int(datetime(year, month, day, 12, tzinfo=UTC).timestamp()) * 1_000_000


@pytest.fixture
def pg() -> Iterator[Database]:
    """A fresh PostgreSQL database, migrated: these tests change its partitions."""
    base = postgres_url_or_skip()
    name = f"tidings_partitions_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    db = open_database(url)
    try:
        migrate.upgrade(db.writer)
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def event(n: int, created_at: int, message_id: str | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_{n:06d}",
        "project_id": 1,
        "profile_id": "prf_1",
        "message_id": message_id or f"m{n}",
        "name": "Viewed",
        "external_id": "u1",
        "anonymous_id": None,
        "data": {"n": n},
        "created_at": created_at,
        "received_at": created_at,
        "context": None,
    }


def store_events(db: Database, rows: list[dict[str, Any]]) -> None:
    store = ProfileStore(db.writer, db.reader)
    with db.writer.begin() as conn:
        store.record_message_ids(conn, rows)
        store.insert_events(conn, rows)


def placement(db: Database) -> dict[str, str]:
    """event id → the partition holding it."""
    with db.reader.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, tableoid::regclass::text FROM events").all()
    return dict(rows)  # type: ignore[arg-type]


def partition_names(db: Database) -> set[str]:
    with db.reader.connect() as conn:
        return {p.name for p in list_partitions(conn)}


def test_the_migration_partitions_events_by_month(pg: Database) -> None:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1
    months = [f"events_{(index + n) // 12:04d}{(index + n) % 12 + 1:02d}" for n in range(3)]
    with pg.reader.connect() as conn:
        key = conn.exec_driver_sql("SELECT pg_get_partkeydef('events'::regclass)").scalar()
        partitions = list_partitions(conn)
    assert key == "RANGE (created_at)"
    assert [p.name for p in partitions] == [DEFAULT_PARTITION, *months]
    lower, upper = month_bounds(now.year, now.month)
    assert (partitions[1].lower, partitions[1].upper) == (lower, upper)
    assert all(a.upper == b.lower for a, b in itertools.pairwise(partitions[1:]))


def test_partitions_are_kept_ahead_and_events_land_in_their_month(pg: Database) -> None:
    clock = [micros(2090, 11, 20)]
    partitions = EventPartitions(pg.writer, clock=lambda: clock[0])
    assert partitions.maintain() == ["events_209011", "events_209012", "events_209101"]
    assert partitions.maintain() == []  # not due again for an hour
    assert partitions.maintain(force=True) == []  # nothing missing
    clock[0] = micros(2091, 1, 2)
    assert partitions.maintain(force=True) == ["events_209102", "events_209103"]

    store_events(pg, [event(1, micros(2090, 12, 31)), event(2, micros(2091, 3, 1))])
    assert placement(pg) == {"evt_000001": "events_209012", "evt_000002": "events_209103"}
    with pg.reader.connect() as conn:  # the new partitions carry the table's indexes
        indexes = {
            name
            for (name,) in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'events_209103'"
            )
        }
    # primary key, profile timeline, profile events by name and time, created_at (BRIN),
    # the project's events by time (reporting, migration 0016)
    assert len(indexes) == 5


def test_rows_in_the_default_partition_move_into_a_new_months_partition(pg: Database) -> None:
    """PostgreSQL refuses a partition for a range that default rows fall into: they move."""
    rows = [
        event(1, micros(2091, 6, 1)),
        event(2, micros(2091, 6, 30)),
        event(3, micros(2091, 8, 15)),
        event(4, micros(2091, 10, 1)),  # beyond the months created: stays in the default
        event(5, micros(1999, 1, 1)),  # long ago: stays in the default
    ]
    store_events(pg, rows)
    assert set(placement(pg).values()) == {DEFAULT_PARTITION}
    with pg.writer.begin() as conn:
        created = ensure_partitions(conn, micros(2091, 6, 10))
    assert created == ["events_209106", "events_209107", "events_209108"]
    assert placement(pg) == {
        "evt_000001": "events_209106",
        "evt_000002": "events_209106",
        "evt_000003": "events_209108",
        "evt_000004": DEFAULT_PARTITION,
        "evt_000005": DEFAULT_PARTITION,
    }
    with pg.reader.connect() as conn:  # nothing lost, nothing doubled
        stored = conn.execute(sa.select(events.c.id, events.c.data).order_by(events.c.id)).all()
    assert [(r.id, r.data) for r in stored] == [(r["id"], r["data"]) for r in rows]
    # and the table takes writes for those months as before
    store_events(pg, [event(6, micros(2091, 7, 4))])
    assert placement(pg)["evt_000006"] == "events_209107"


def test_one_worker_at_a_time_changes_the_partitions(pg: Database) -> None:
    with pg.writer.connect() as holder:
        with holder.begin():
            assert try_lock(holder)
            with pg.writer.begin() as conn:
                assert ensure_partitions(conn, micros(2092, 1, 1)) == []  # skipped
        with pg.writer.begin() as conn:
            assert len(ensure_partitions(conn, micros(2092, 1, 1))) == 3
    assert {"events_209201", "events_209202", "events_209203"} <= partition_names(pg)


# -- de-duplication -------------------------------------------------------------------------


def _entry(
    project_id: int,
    external_id: str,
    message_id: str,
    created_at: int,
    partitions: int = PARTITIONS,
) -> LogEntry:
    return LogEntry(
        project_id=project_id,
        kind="event",
        partition=partition_of(project_id, external_id, partitions),
        payload={
            "name": "Paid",
            "external_id": external_id,
            "message_id": message_id,
            "created_at": created_at,
        },
        accepted_at=created_at,
    )


def _count(db: Database, table: sa.Table, **where: Any) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with db.reader.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_a_retried_event_is_stored_once_whatever_its_created_at(settings: Settings) -> None:
    """The retry lands in another month (another partition on PostgreSQL): still dropped."""
    services = make_services(settings)
    try:
        project = create_project(services)
        db = services.db
        store = ProfileStore(db.writer, db.reader)
        log = DatabaseLog(db.writer, db.reader, 1)
        processor = BatchProcessor(db.writer, db.reader, store)
        now = time.time_ns() // 1000
        for created_at in (now, now - 45 * 86_400_000_000, now - 400 * 86_400_000_000):
            entry = _entry(project.id, "u1", "m-retried", created_at, partitions=1)
            log.append([AppendRequest([entry])])
        records = log.read(0, 0, 10)
        processor.process(records[:1], now)
        processor.process(records[1:], now)
        assert _count(db, events) == 1
        assert _count(db, event_message_ids) == 1
    finally:
        services.close()


def _two_workers(services: Services) -> list[tuple[BatchProcessor, Database]]:
    """Two concurrent processors, each with its own engines, as two worker processes."""
    db = services.db
    ProfileStore(db.writer, db.reader).ensure_positions(range(PARTITIONS))
    workers = []
    for _ in range(2):
        own = open_database(services.settings.database_url_value)
        store = ProfileStore(own.processing_writer, own.reader)
        processor = BatchProcessor(own.processing_writer, own.reader, store, concurrent=True)
        workers.append((processor, own))
    return workers


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_message_id_stored_by_another_worker_since_the_batch_was_read(
    settings: Settings,
) -> None:
    """Worker B read its batch before worker A committed the same message id (retried
    under another identity, so in another partition): B's write finds it taken, the batch
    is computed again and the duplicate dropped; B's other events are stored."""
    services = make_services(settings)
    (a, a_db), (b, b_db) = _two_workers(services)
    try:
        project = create_project(services)
        now = time.time_ns() // 1000
        first = _entry(project.id, "u1", "m-dup", now)
        second = _entry(project.id, "u2", "m-dup", now)
        other = _entry(project.id, "u2", "m-other", now)
        assert first.partition != second.partition
        log = DatabaseLog(services.db.writer, services.db.reader, PARTITIONS)
        log.append([AppendRequest([first]), AppendRequest([second, other])])
        a_records = log.read(first.partition, 0, 10)
        b_records = log.read(second.partition, 0, 10)

        real_lookup = b.store.lookup_identities
        done = []

        def lookup_then_let_a_commit(conn: Any, keys: Any) -> Any:
            if not done:  # B has read "m-dup" as new; now A stores it
                done.append(True)
                a.process(a_records, now, None, {first.partition: 0})
            return real_lookup(conn, keys)

        b.store.lookup_identities = lookup_then_let_a_commit  # type: ignore[method-assign]
        with pytest.raises(StaleBatch, match="message id"):
            b.process(b_records, now, None, {second.partition: 0})
        b.process(b_records, now, None, {second.partition: 0})  # computed again
        assert _count(services.db, events, message_id="m-dup") == 1
        assert _count(services.db, events, message_id="m-other") == 1
        assert _count(services.db, event_message_ids) == 2
    finally:
        for db in (a_db, b_db):
            db.dispose()
        services.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_writing_one_message_id_at_the_same_moment(settings: Settings) -> None:
    """B inserts the message id while A's transaction holds it uncommitted: B waits, sees
    A's commit, and its batch is stale. The event is stored once."""
    services = make_services(settings)
    (a, a_db), (b, b_db) = _two_workers(services)
    try:
        project = create_project(services)
        now = time.time_ns() // 1000
        first = _entry(project.id, "u1", "m-race", now)
        second = _entry(project.id, "u2", "m-race", now)
        log = DatabaseLog(services.db.writer, services.db.reader, PARTITIONS)
        log.append([AppendRequest([first]), AppendRequest([second])])
        a_records = log.read(first.partition, 0, 10)
        b_records = log.read(second.partition, 0, 10)
        outcome: list[BaseException | None] = []

        def run_b() -> None:
            try:
                b.process(b_records, now, None, {second.partition: 0})
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=run_b)

        def while_a_holds_it(_conn: Any) -> None:  # end of A's write transaction
            thread.start()
            time.sleep(0.5)  # B is now waiting on A's uncommitted message id
            assert not outcome, "B did not wait for A"

        a.process(a_records, now, while_a_holds_it, {first.partition: 0})
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], StaleBatch)
        b.process(b_records, now, None, {second.partition: 0})  # computed again: dropped
        assert _count(services.db, events, message_id="m-race") == 1
        assert _count(services.db, event_message_ids) == 1
    finally:
        for db in (a_db, b_db):
            db.dispose()
        services.close()


def test_sqlite_needs_no_partitions(tmp_path: Path) -> None:
    """On SQLite the table is plain, and the worker's upkeep leaves partitions alone."""
    db = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        migrate.upgrade(db.writer)
        assert EventUpkeep(db.processing_writer, 0).partitions is None
    finally:
        db.dispose()
