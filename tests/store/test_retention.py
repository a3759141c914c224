"""Event retention on both databases: events older than the window are deleted (whole
monthly partitions dropped on PostgreSQL), recent ones kept, and the message ids pruned by
the same cutoff: that is the de-duplication window."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Project, bearer, create_project, drain, make_services, make_settings
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.settings import Settings
from tidings.store.database import Database
from tidings.store.partitions import create_partition, list_partitions, month_of
from tidings.store.profiles import ProfileStore
from tidings.store.retention import DAY, EventRetention, EventUpkeep
from tidings.store.tables import event_message_ids, events

NOW = time.time_ns() // 1000


def event(n: int, created_at: int) -> dict[str, Any]:
    return {
        "id": f"evt_{n:06d}",
        "project_id": 1,
        "profile_id": "prf_1",
        "message_id": f"m{n}",
        "name": "Viewed",
        "external_id": "u1",
        "anonymous_id": None,
        "data": {},
        "created_at": created_at,
        "received_at": NOW,
        "context": None,
    }


def store_events(db: Database, rows: list[dict[str, Any]]) -> None:
    store = ProfileStore(db.writer, db.reader)
    with db.writer.begin() as conn:
        store.record_message_ids(conn, rows)
        store.insert_events(conn, rows)


def stored(db: Database) -> tuple[list[str], list[str]]:
    """(event message ids, de-duplication message ids), sorted."""
    with db.reader.connect() as conn:
        kept = conn.execute(sa.select(events.c.message_id)).scalars().all()
        ids = conn.execute(sa.select(event_message_ids.c.message_id)).scalars().all()
    return sorted(kept), sorted(ids)


@pytest.fixture
def db(settings: Settings) -> Any:
    services = make_services(settings)  # migrated, not started: nothing else writes
    yield services.db
    services.close()


def test_old_events_and_their_message_ids_go_recent_ones_stay(db: Database) -> None:
    ages = {1: 400, 2: 100, 3: 31, 4: 29, 5: 1, 6: -1}  # days before now
    store_events(db, [event(n, NOW - days * DAY) for n, days in ages.items()])
    retention = EventRetention(db.processing_writer, 30, chunk=2, clock=lambda: NOW)
    pruned = retention.run()
    assert pruned.finished
    assert (pruned.events, pruned.message_ids) == (3, 3)
    assert stored(db) == (["m4", "m5", "m6"], ["m4", "m5", "m6"])
    assert retention.run().events == 0  # the next pass is not due yet
    assert retention.run(force=True).events == 0  # and would find nothing


def test_zero_keeps_everything(db: Database) -> None:
    store_events(db, [event(1, 0), event(2, NOW - 10_000 * DAY)])
    pruned = EventRetention(db.processing_writer, 0).run(force=True)
    assert (pruned.events, pruned.message_ids) == (0, 0)
    assert stored(db) == (["m1", "m2"], ["m1", "m2"])


def test_a_pass_is_bounded_and_continues_on_the_next_call(db: Database) -> None:
    store_events(db, [event(n, NOW - (40 + n) * DAY) for n in range(7)])
    retention = EventRetention(db.processing_writer, 30, chunk=2, budget=0, clock=lambda: NOW)
    calls = []
    while True:
        pruned = retention.run()  # not forced: an unfinished pass is due at once
        calls.append((pruned.events, pruned.message_ids))
        if pruned.finished:
            break
        assert len(calls) < 10
    # one chunk per call: 2 + 2 + 2 + 1 events, then the message ids likewise
    assert calls == [(2, 0), (2, 0), (2, 0), (1, 2), (0, 2), (0, 2), (0, 1)]
    assert stored(db) == ([], [])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_whole_months_older_than_the_cutoff_are_dropped(db: Database) -> None:
    """Partitions entirely before the cutoff go at once; the month straddling it and the
    default partition are deleted row by row."""
    days = 75
    cutoff = NOW - days * DAY
    year, month = month_of(cutoff)
    index = year * 12 + month - 1
    months = [((index - n) // 12, (index - n) % 12 + 1) for n in (2, 1, 0)]  # S-2, S-1, S
    with db.writer.begin() as conn:
        existing = {p.name for p in list_partitions(conn)}
        for y, m in months:
            if f"events_{y:04d}{m:02d}" not in existing:
                create_partition(conn, y, m)
    straddling_start = int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1_000_000
    rows = [
        event(1, int(datetime(*months[0], 15, tzinfo=UTC).timestamp()) * 1_000_000),
        event(2, int(datetime(*months[1], 2, tzinfo=UTC).timestamp()) * 1_000_000),
        event(3, straddling_start),  # before the cutoff, in the straddling month
        event(4, cutoff + DAY),  # after it (in the straddling month or the next)
        event(5, NOW - 20_000 * DAY),  # long ago: the default partition
        event(6, NOW + 20_000 * DAY),  # far ahead: the default partition, kept
        event(7, NOW),
    ]
    assert straddling_start < cutoff  # event 3 is really before the cutoff
    store_events(db, rows)
    pruned = EventRetention(db.processing_writer, days, clock=lambda: NOW).run()
    y0, m0 = months[0]
    y1, m1 = months[1]
    assert sorted(pruned.partitions) == [f"events_{y0:04d}{m0:02d}", f"events_{y1:04d}{m1:02d}"]
    assert pruned.events == 2  # events 3 and 5; 1 and 2 went with their partitions
    assert pruned.message_ids == 4
    assert stored(db) == (["m4", "m6", "m7"], ["m4", "m6", "m7"])
    with db.reader.connect() as conn:
        names = {p.name for p in list_partitions(conn)}
    assert f"events_{year:04d}{month:02d}" in names
    assert not {f"events_{y0:04d}{m0:02d}", f"events_{y1:04d}{m1:02d}"} & names


def test_the_workers_upkeep_runs_retention_with_the_setting(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path, event_retention_days=30))
    try:
        store_events(services.db, [event(1, NOW - 31 * DAY), event(2, NOW - 29 * DAY)])
        services.maintenance()
        assert stored(services.db) == (["m2"], ["m2"])
        assert isinstance(services._event_upkeep, EventUpkeep)
    finally:
        services.close()


def test_a_failing_pass_does_not_stop_the_worker(db: Database, caplog: Any) -> None:
    upkeep = EventUpkeep(db.processing_writer, 30)

    def broken(**_: Any) -> Any:
        raise RuntimeError("database gone")

    upkeep.retention.run = broken  # type: ignore[method-assign]
    upkeep.run()  # logged, not raised
    assert "event retention failed" in caplog.text


# -- through the API --------------------------------------------------------------------------


async def _send(client: httpx.AsyncClient, project: Project, body: list[dict[str, Any]]) -> None:
    response = await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    assert response.status_code == 204, response.text


@pytest.fixture
def retaining_services(settings: Settings) -> Any:
    services = make_services(settings.model_copy(update={"event_retention_days": 30}))
    # The test prunes by hand; the worker's own pass would race with it (its first run can
    # land after any of the test's sends on a loaded machine), so it keeps nothing here.
    services._event_upkeep = EventUpkeep(services.db.processing_writer, 0)
    services.start()
    yield services
    services.stop()


async def test_a_retry_within_the_window_is_dropped_and_after_it_stored_again(
    retaining_services: Services,
) -> None:
    """The de-duplication window is the retention window: a retry of an event older than
    it is stored again (and removed by the next pass, being old already)."""
    services = retaining_services
    project = create_project(services)
    app = create_app(services, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    old = datetime.fromtimestamp((NOW - 40 * DAY) / 1e6, UTC).isoformat()
    recent = datetime.fromtimestamp((NOW - 2 * DAY) / 1e6, UTC).isoformat()
    batch = [
        {"name": "Old", "external_id": "u1", "message_id": "old", "created_at": old},
        {"name": "Recent", "external_id": "u1", "message_id": "recent", "created_at": recent},
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
        await _send(client, project, batch)
        await drain(services)
        assert stored(services.db) == (["old", "recent"], ["old", "recent"])
        pruned = EventRetention(services.db.processing_writer, 30).run()
        assert (pruned.events, pruned.message_ids) == (1, 1)
        await _send(client, project, batch)  # the client retries both
        await drain(services)
        assert stored(services.db) == (["old", "recent"], ["old", "recent"])  # "recent" once
        await _send(client, project, batch[1:])
        await drain(services)
        assert stored(services.db) == (["old", "recent"], ["old", "recent"])


def test_message_ids_of_an_erased_profile_are_forgotten(db: Database) -> None:
    """Erasure deletes everything about a person: their events' message ids too."""
    store_events(db, [event(1, NOW), {**event(2, NOW), "profile_id": "prf_2"}])
    with db.writer.begin() as conn:
        ProfileStore.erase_profile(conn, 1, "prf_1")
    assert stored(db) == (["m2"], ["m2"])
