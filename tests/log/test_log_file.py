"""SQLite: the ingest log in a file of its own beside the database.

What the file must never do: lose an entry the database has not applied (upgrade from a
database holding its own log, a trim before the database made its position durable),
hand out a position the worker has passed (a log file that is new or older than the
database), or let one ``Idempotency-Key`` answer two different requests because their
records live in two files.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain, make_services, make_settings
from tests.pipeline.test_processor import append
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry
from tidings.log.database import DatabaseLog, LogFileError, log_file_path
from tidings.store.tables import events, idempotency_keys


def event_names(services: Services) -> list[str]:
    with services.db.reader.connect() as conn:
        return sorted(conn.execute(sa.select(events.c.name)).scalars())


def count(path: Path, table: str = "ingest_log") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def applied_all(services: Services, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while services.log.pending():
        assert time.monotonic() < deadline, "the log was not applied"
        if services.consumer is not None:
            services.consumer.wake.set()
        time.sleep(0.01)


def set_position(services: Services, seq: int) -> None:
    with services.db.processing_writer.begin() as conn:
        services.profiles.set_positions(conn, {0: seq})


def test_the_log_file_name() -> None:
    assert log_file_path("/data/tidings.db") == "/data/tidings-log.db"
    assert log_file_path("/data/store") == "/data/store-log"
    assert log_file_path("file:/data/t.sqlite") == "file:/data/t-log.sqlite"


@asynccontextmanager
async def serving(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[Services, Project, httpx.AsyncClient]]:
    """Started services on SQLite in ``tmp_path`` (with these settings), a project, and a
    client of the app."""
    services = make_services(make_settings(tmp_path, **settings))
    services.start()
    try:
        project = create_project(services)
        transport = httpx.ASGITransport(app=create_app(services, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield services, project, client
    finally:
        services.stop()


async def test_entries_go_to_the_log_file_and_are_trimmed_once_applied(tmp_path: Path) -> None:
    async with serving(tmp_path) as (services, project, client):
        body = [{"name": f"E{n}", "external_id": "u"} for n in range(5)]
        response = await client.post("/api/client/events", json=body, headers=bearer(project.pk))
        assert response.status_code == 204
        # Acknowledged: in the log file, not in the database's own table.
        assert count(tmp_path / "tidings-log.db") == 5
        assert count(tmp_path / "tidings.db") == 0
        await drain(services)
        assert event_names(services) == [f"E{n}" for n in range(5)]
        assert services.consumer is not None
        services.consumer.trim()
        assert count(tmp_path / "tidings-log.db") == 0


def test_a_trim_waits_for_the_database_to_make_the_positions_durable(tmp_path: Path) -> None:
    """The worker commits without an fsync: the entries may go only after ``sync``."""
    services = make_services(make_settings(tmp_path, run_worker=False))
    try:
        project = create_project(services)
        append(
            services,
            project.id,
            [("event", {"name": "E", "external_id": "u", "message_id": f"m{n}"}) for n in range(3)],
        )
        log = services.log
        assert isinstance(log, DatabaseLog) and log.own_file
        seen_at_sync: list[int] = []
        log._sync_positions = lambda: seen_at_sync.append(count(tmp_path / "tidings-log.db"))
        assert log.trim(0, 10) == 0 and seen_at_sync == []  # nothing applied: no sync either
        services.profiles.ensure_positions(range(log.partitions))
        set_position(services, 2)
        assert log.trim(0, 2) == 2
        assert seen_at_sync == [3]  # synced while every entry was still there
        assert [r.seq for r in log.read_all(0, 10)] == [3]
        assert log.trim(0, 2) == 0 and seen_at_sync == [3]  # nothing new applied
    finally:
        services.close()


def test_entries_an_earlier_version_left_in_the_database_move_with_their_positions(
    tmp_path: Path,
) -> None:
    services = make_services(make_settings(tmp_path, run_worker=False))
    project = create_project(services)
    # The earlier layout: the log as a table of the database itself.
    old = DatabaseLog(services.db.writer, services.db.reader, 8)
    entries = [
        LogEntry(
            project.id,
            "event",
            0,
            {"name": f"Old{n}", "external_id": "u", "message_id": f"old{n}"},
            1_000 + n,
        )
        for n in range(3)
    ]
    outcome = old.append([AppendRequest(entries, want_positions=True)])[0]
    positions = [seq for _, seq in outcome.positions]
    services.close()
    (tmp_path / "tidings-log.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"tidings-log.db{suffix}").unlink(missing_ok=True)

    services = make_services(make_settings(tmp_path))
    services.start()
    try:
        assert [r.seq for r in services.log.read_all(0, 10)] == positions
        assert count(tmp_path / "tidings.db") == 0
        append(
            services,
            project.id,
            [("event", {"name": "New", "external_id": "u", "message_id": "new"})],
        )
        assert services.log.last_seq() > positions[-1]
        applied_all(services)
        assert event_names(services) == ["New", "Old0", "Old1", "Old2"]
    finally:
        services.stop()


def test_a_new_log_file_never_hands_out_a_position_the_worker_passed(tmp_path: Path) -> None:
    """The log file lost, or restored from a backup older than the database's: new entries
    must get positions above what the worker applied, or it would skip them."""
    services = make_services(make_settings(tmp_path, run_worker=False))
    project = create_project(services)
    services.profiles.ensure_positions(range(services.log.partitions))
    set_position(services, 500)
    services.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"tidings-log.db{suffix}").unlink(missing_ok=True)

    services = make_services(make_settings(tmp_path))
    services.start()
    try:
        append(
            services,
            project.id,
            [("event", {"name": "After", "external_id": "u", "message_id": "after"})],
        )
        assert services.log.last_seq() == 501
        applied_all(services)
        assert event_names(services) == ["After"]
    finally:
        services.stop()


def test_a_log_file_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    make_services(make_settings(tmp_path)).close()
    with sqlite3.connect(tmp_path / "tidings-log.db") as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(LogFileError, match="newer than this version"):
        make_services(make_settings(tmp_path))


async def test_one_key_answers_one_request_across_the_two_files(tmp_path: Path) -> None:
    """Ingest keeps its records in the log file, list changes in the database: a key used
    on one is still known to the other (``409 idempotency_key_mismatch``)."""
    async with serving(tmp_path) as (_, project, client):

        async def post(path: str, body: Any, key: str) -> httpx.Response:
            headers = bearer(project.sk, **{"Idempotency-Key": key})
            return await client.post(f"/api/client/{path}", json=body, headers=headers)

        event = [{"name": "E", "external_id": "u"}]
        new_list = {"name": "Customers", "type": "static"}
        assert (await post("events", event, "ingest-first")).status_code == 204
        mismatch = await post("lists", new_list, "ingest-first")
        assert_problem(mismatch, 409, "idempotency_key_mismatch")
        assert (await post("lists", new_list, "list-first")).status_code == 201
        assert_problem(await post("events", event, "list-first"), 409, "idempotency_key_mismatch")
        # Each is still answered by its own record.
        replay = await post("events", event, "ingest-first")
        assert replay.headers["idempotent-replayed"] == "true"
        replay = await post("lists", new_list, "list-first")
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    with sqlite3.connect(tmp_path / "tidings-log.db") as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM idempotency_keys")}
    assert keys == {"ingest-first"}
    assert count(tmp_path / "tidings.db") == 0


def test_an_expired_record_is_forgotten_in_either_file_and_a_fresh_one_kept(
    tmp_path: Path,
) -> None:
    services = make_services(make_settings(tmp_path, run_worker=False))
    try:
        in_log, in_database = services.idempotency, services.change_idempotency
        assert in_log.writer is not in_database.writer
        for store, key, created_at in [
            (in_log, "old-in-log", 100),
            (in_database, "old-in-log", 5_000),  # the same key, still fresh
            (in_database, "old-in-database", 100),
        ]:
            with store.writer.begin() as conn:
                conn.execute(
                    sa.insert(idempotency_keys),
                    {"project_id": 1, "key": key, "request_hash": "h", "created_at": created_at},
                )
        # Each store finds the other's records.
        assert in_log.get(1, "old-in-database") is not None
        record = in_database.get(1, "old-in-log")
        assert record is not None and record.created_at == 5_000
        in_log.forget(1, "old-in-log", created_before=1_000)
        in_database.forget(1, "old-in-database", created_before=1_000)
        record = in_log.get(1, "old-in-log")
        assert record is not None and record.created_at == 5_000  # the fresh one is kept
        assert in_log.get(1, "old-in-database") is None
    finally:
        services.close()


def test_a_commit_of_several_statements_is_all_or_nothing(tmp_path: Path) -> None:
    """Plain entries go in multi-row INSERTs of up to 6,000 rows; a commit of more takes
    several, in one transaction: a failure in the second leaves none of the first."""
    services = make_services(make_settings(tmp_path, run_worker=False))
    try:
        log = services.log
        with sqlite3.connect(tmp_path / "tidings-log.db") as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON ingest_log WHEN NEW.project_id = -1 "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )

        def entries(n: int, bad_at: int | None = None) -> list[LogEntry]:
            return [
                LogEntry(-1 if i == bad_at else 1, "event", 0, {"name": "E"}, 1_000)
                for i in range(n)
            ]

        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            log.append([AppendRequest(entries(4_000)), AppendRequest(entries(4_000, 3_500))])
        assert count(tmp_path / "tidings-log.db") == 0
        outcomes = log.append([AppendRequest(entries(4_000)), AppendRequest(entries(4_000))])
        assert [o.appended for o in outcomes] == [True, True]
        assert count(tmp_path / "tidings-log.db") == 8_000
        assert [r.seq for r in log.read_all(0, 3)] == [1, 2, 3]
    finally:
        services.close()
