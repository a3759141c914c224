"""Partition leases: fair shares, take-over when a worker dies, and the fence that keeps a
worker who lost its lease from writing a batch twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.log.database import DatabaseLog
from tidings.pipeline.consumer import Consumer, ProcessedWatch
from tidings.pipeline.processor import BatchProcessor, StaleBatch
from tidings.settings import Settings
from tidings.store.database import open_database
from tidings.store.leases import AdvisoryLeases, FileLease, fair_share
from tidings.store.profiles import ProfileStore
from tidings.store.tables import events, identities, profiles

from ..conftest import create_project, make_services

PARTITIONS = 8


def test_fair_share() -> None:
    assert fair_share(8, 1) == 8
    assert fair_share(8, 2) == 4
    assert fair_share(8, 3) == 3
    assert fair_share(8, 0) == 8


def test_file_lease_has_one_holder_and_passes_on_when_it_closes(tmp_path: Path) -> None:
    path = str(tmp_path / "db.worker-lock")
    first, second = FileLease(path, PARTITIONS), FileLease(path, PARTITIONS)
    assert first.rebalance() == set(range(PARTITIONS))
    assert second.rebalance() == set()
    first.close()
    assert second.rebalance() == set(range(PARTITIONS))
    second.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_advisory_leases_split_fairly_and_take_over(settings: Settings) -> None:
    engine = sa.create_engine(
        settings.database_url_value.replace("postgresql://", "postgresql+psycopg://")
    )
    a, b = AdvisoryLeases(engine, PARTITIONS), AdvisoryLeases(engine, PARTITIONS)
    try:
        assert a.rebalance() == set(range(PARTITIONS))  # alone: everything
        assert b.rebalance() == set()  # joined: nothing free yet
        assert len(a.rebalance()) == 4  # a sees two members and gives half back
        assert len(b.rebalance()) == 4
        assert a.held.isdisjoint(b.held)
        a.close()  # a worker stops (or dies: its connection closes)
        assert b.rebalance() == set(range(PARTITIONS))
    finally:
        a.close()
        b.close()
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_workers_of_another_database_do_not_count(settings: Settings) -> None:
    """pg_locks lists the whole server's locks: a worker of another database on the same
    server must not shrink this database's workers' shares."""
    from tests.conftest import POSTGRES_URL

    assert POSTGRES_URL is not None
    other_engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    engine = sa.create_engine(
        settings.database_url_value.replace("postgresql://", "postgresql+psycopg://")
    )
    elsewhere, here = AdvisoryLeases(other_engine, PARTITIONS), AdvisoryLeases(engine, PARTITIONS)
    try:
        assert elsewhere.rebalance() == set(range(PARTITIONS))
        assert here.rebalance() == set(range(PARTITIONS))
    finally:
        elsewhere.close()
        here.close()
        engine.dispose()
        other_engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_leases_die_with_their_connection(settings: Settings) -> None:
    engine = sa.create_engine(
        settings.database_url_value.replace("postgresql://", "postgresql+psycopg://")
    )
    a, b = AdvisoryLeases(engine, PARTITIONS), AdvisoryLeases(engine, PARTITIONS)
    try:
        a.rebalance()
        assert a._conn is not None
        pid = a._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert a.rebalance() == set()  # notices, holds nothing
        assert b.rebalance() == set(range(PARTITIONS))
        assert a.rebalance() == set()  # reconnected as a second member; b gives half back
        assert len(b.rebalance()) == 4
        assert len(a.rebalance()) == 4
    finally:
        a.close()
        b.close()
        engine.dispose()


def _entry(project_id: int, kind: str, payload: dict[str, object], n: int) -> LogEntry:
    key = str(payload.get("external_id") or payload.get("anonymous_id"))
    return LogEntry(
        project_id=project_id,
        kind=kind,  # type: ignore[arg-type]
        partition=partition_of(project_id, key, PARTITIONS),
        payload=payload,
        accepted_at=n,
    )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_worker_that_lost_its_partition_cannot_write_a_batch(settings: Settings) -> None:
    services = make_services(settings)
    project = create_project(services)
    db = services.db
    store = ProfileStore(db.writer, db.reader)
    store.ensure_positions(range(PARTITIONS))
    log = DatabaseLog(db.writer, db.reader, PARTITIONS)
    entry = _entry(
        project.id, "event", {"name": "Paid", "external_id": "u1", "message_id": "m1"}, 1
    )
    log.append([AppendRequest([entry])])
    records = log.read(entry.partition, 0, 10)
    processor = BatchProcessor(db.writer, db.reader, store, concurrent=True)
    processor.process(records, 1, None, {entry.partition: 0})
    with pytest.raises(StaleBatch):  # a second worker still believing it starts from 0
        processor.process(records, 2, None, {entry.partition: 0})
    with db.reader.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 1
    services.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_on_one_persons_ids_in_different_partitions(settings: Settings) -> None:
    """Anonymous events, identifies linking them, and known-user events for the same people
    land in different partitions owned by two workers running at once. Every person ends
    with one profile holding all their events and both ids; nothing points at a profile
    that no longer exists."""
    services = make_services(settings)
    project = create_project(services)
    url = settings.database_url_value
    people = 300
    rounds = 3
    appender_db = open_database(url)
    log = DatabaseLog(appender_db.writer, appender_db.reader, PARTITIONS)
    consumers = []
    for _ in range(2):
        db = open_database(url)
        store = ProfileStore(db.processing_writer, db.reader)
        consumer = Consumer(
            DatabaseLog(db.writer, db.reader, PARTITIONS),
            BatchProcessor(db.processing_writer, db.reader, store, concurrent=True),
            leases=AdvisoryLeases(db.reader, PARTITIONS),
            rebalance_every=0.05,
            watch=ProcessedWatch(),
            batch_size=20,
            coalesce=0,
            idle_wait=0.01,
        )
        consumers.append((db, consumer))
    try:
        for _, consumer in consumers:
            consumer.start()
        deadline = time.monotonic() + 10
        while not all(len(c.partitions) == 4 for _, c in consumers):
            assert time.monotonic() < deadline, "the workers did not split the partitions"
            time.sleep(0.02)
        n = 0
        for r in range(rounds):
            requests = []
            for i in range(people):
                n += 1
                anon, user = f"anon-{i}", f"user-{i}"
                payloads: list[tuple[str, dict[str, object]]] = [
                    ("event", {"name": "Viewed", "anonymous_id": anon, "message_id": f"v{r}-{i}"}),
                    ("identify", {"anonymous_id": anon, "external_id": user, "data": {"r": r}}),
                    ("event", {"name": "Paid", "external_id": user, "message_id": f"p{r}-{i}"}),
                ]
                requests.append(AppendRequest([_entry(project.id, k, p, n) for k, p in payloads]))
            log.append(requests)
        deadline = time.monotonic() + 60
        while log.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.pending() == 0
        assert all(len(c.partitions) == 4 for _, c in consumers), "the workers split the log"
        with appender_db.reader.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar_one()
                == people
            )
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
                == people * rounds * 2
            )
            orphans = conn.execute(
                sa.select(sa.func.count())
                .select_from(events.outerjoin(profiles, profiles.c.id == events.c.profile_id))
                .where(profiles.c.id.is_(None))
            ).scalar_one()
            assert orphans == 0
            per_profile = conn.execute(
                sa.select(identities.c.profile_id, sa.func.count()).group_by(
                    identities.c.profile_id
                )
            ).all()
            assert len(per_profile) == people and all(c == 2 for _, c in per_profile)
            last = conn.execute(sa.select(profiles.c.data)).scalars().all()
            assert all(d == {"r": rounds - 1} for d in last)
    finally:
        stopper = [threading.Thread(target=c.stop) for _, c in consumers]
        for t in stopper:
            t.start()
        for t in stopper:
            t.join()
        for db, _ in consumers:
            db.dispose()
        appender_db.dispose()
        services.close()
