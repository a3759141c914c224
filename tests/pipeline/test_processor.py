"""The batch processor: one transaction per batch, with the log position."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import create_project, make_services, make_settings
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.pipeline.processor import BatchProcessor
from tidings.store.tables import events, log_positions, profiles


@pytest.fixture
def idle_services(tmp_path) -> Services:
    """Services whose consumer is driven by hand (never started)."""
    services = make_services(make_settings(tmp_path))
    yield services
    services.close()


def append(services: Services, project_id: int, items: list[tuple[str, dict[str, Any]]]) -> None:
    entries = [
        LogEntry(
            project_id=project_id,
            kind=kind,  # type: ignore[arg-type]
            partition=partition_of(project_id, payload.get("external_id") or "", 1),
            payload=payload,
            accepted_at=1_000_000 + index,
        )
        for index, (kind, payload) in enumerate(items)
    ]
    services.log.append([AppendRequest(entries)])


def rows(services: Services, table: sa.Table) -> list[Any]:
    with services.db.reader.connect() as conn:
        return conn.execute(sa.select(table)).all()


def processor(services: Services) -> BatchProcessor:
    return BatchProcessor(services.db.writer, services.db.reader, services.profiles)


def test_a_failed_batch_leaves_no_effect_and_no_position(
    idle_services: Services, monkeypatch
) -> None:
    services = idle_services
    services.log.partitions = 1
    project = create_project(services)
    append(services, project.id, [("event", {"name": "E", "external_id": "u", "message_id": "m1"})])
    records = services.log.read(0, 0, 100)

    def explode(*_: Any) -> None:
        raise RuntimeError("crash between the profile write and the event write")

    monkeypatch.setattr(services.profiles, "insert_events", explode)
    with pytest.raises(RuntimeError):
        processor(services).process(records, now=2_000_000)
    assert rows(services, profiles) == [] and rows(services, log_positions) == []
    monkeypatch.undo()
    processor(services).process(records, now=2_000_000)
    assert len(rows(services, events)) == 1
    assert [tuple(r) for r in rows(services, log_positions)] == [(0, records[-1].seq)]


def test_replaying_a_committed_batch_has_no_second_effect(idle_services: Services) -> None:
    services = idle_services
    project = create_project(services)
    append(
        services,
        project.id,
        [("event", {"name": "E", "external_id": "u", "message_id": f"m{i}"}) for i in range(5)],
    )
    partition = partition_of(project.id, "u", 1)
    records = services.log.read(partition, 0, 100)
    processor(services).process(records, now=2_000_000)
    processor(services).process(records, now=3_000_000)
    assert len(rows(services, events)) == 5
    assert len(rows(services, profiles)) == 1


def test_identify_merges_an_anonymous_profile_into_the_known_one(idle_services: Services) -> None:
    services = idle_services
    project = create_project(services)
    p = project.id
    append(
        services,
        p,
        [
            ("event", {"name": "Viewed", "anonymous_id": "a1", "message_id": "m1"}),
            ("identify", {"anonymous_id": "a1", "data": {"plan": "free", "seen": 1}}),
            ("event", {"name": "Bought", "external_id": "u1", "message_id": "m2"}),
            ("identify", {"external_id": "u1", "data": {"plan": "pro"}}),
            ("identify", {"anonymous_id": "a1", "external_id": "u1"}),
        ],
    )
    consume_all(services)
    (profile,) = rows(services, profiles)
    assert profile.external_id == "u1"
    assert profile.data == {"plan": "pro", "seen": 1}  # the later write wins
    assert {e.profile_id for e in rows(services, events)} == {profile.id}


def test_two_known_users_are_never_merged(idle_services: Services) -> None:
    services = idle_services
    project = create_project(services)
    append(
        services,
        project.id,
        [
            ("identify", {"anonymous_id": "shared", "external_id": "u1"}),
            ("identify", {"external_id": "u2"}),
            ("identify", {"anonymous_id": "shared", "external_id": "u2"}),
        ],
    )
    consume_all(services)
    assert sorted(r.external_id for r in rows(services, profiles)) == ["u1", "u2"]


def consume_all(services: Services) -> None:
    work = processor(services)
    while True:
        moved = 0
        positions = services.profiles.positions()
        for partition in range(services.log.partitions):
            records = services.log.read(partition, positions.get(partition, 0), 1000)
            if records:
                work.process(records, now=5_000_000)
                moved += len(records)
        if not moved:
            return
