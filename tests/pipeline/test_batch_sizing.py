"""On SQLite the worker sizes its batches by how long writing one takes: the API's
appends wait for the database's one write lock while a batch is written, so a slow batch
(many live lists, say) must not hold it for long (TIDINGS_WORKER_MAX_WRITE_MS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import create_project, make_services, make_settings
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.pipeline.consumer import MIN_BATCH


@pytest.fixture
def services(tmp_path: Path) -> Services:
    services = make_services(make_settings(tmp_path, worker_batch_size=400))
    yield services
    services.db.dispose()


def backlog(services: Services, count: int) -> None:
    project = create_project(services)
    partitions = services.log.partitions
    entries = [
        LogEntry(
            project.id,
            "event",
            partition_of(project.id, f"u_{n}", partitions),
            {"name": "E", "external_id": f"u_{n}", "message_id": f"m_{n}"},
            1_000_000 + n,
        )
        for n in range(count)
    ]
    services.log.append([AppendRequest(entries)])


def consumer_of(services: Services, max_write: float):  # type: ignore[no-untyped-def]
    consumer = services.consumer
    assert consumer is not None
    consumer.max_write = max_write
    consumer.processor.store.ensure_positions(range(services.log.partitions))
    consumer.partitions = list(range(services.log.partitions))
    consumer._reload_positions()
    return consumer


def test_slow_writes_shrink_the_batches_and_fast_ones_grow_them_back(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlog(services, 1_000)
    consumer = consumer_of(services, max_write=0.010)
    processor = consumer.processor
    real_process = processor.process
    write_times = iter([0.040, 0.020, 0.001, 0.001])  # seconds each batch "took" to write

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_process(*args, **kwargs)
        processor.last_write = next(write_times)

    monkeypatch.setattr(processor, "process", timed)
    sizes = [consumer.poll_once() for _ in range(4)]
    # 400 entries took 40 ms: a quarter; 100 took 20 ms: half; then fast, so doubled.
    assert sizes == [400, 100, 50, 100]
    assert consumer.limit == 200
    assert consumer.processed == 650


def test_the_batch_never_shrinks_below_the_minimum_nor_grows_above_the_setting(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlog(services, 3_000)
    consumer = consumer_of(services, max_write=0.010)
    processor = consumer.processor
    real_process = processor.process
    slow = True

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_process(*args, **kwargs)
        processor.last_write = 10.0 if slow else 0.0001

    monkeypatch.setattr(processor, "process", timed)
    consumer.poll_once()
    assert consumer.limit == MIN_BATCH
    slow = False
    for _ in range(8):
        consumer.poll_once()
    assert consumer.limit == 400


def test_without_a_limit_batches_stay_full(services: Services) -> None:
    backlog(services, 1_000)
    consumer = consumer_of(services, max_write=0.0)
    assert [consumer.poll_once() for _ in range(3)] == [400, 400, 200]
    assert consumer.processor.last_write > 0  # measured all the same


def test_the_limit_comes_from_the_setting_on_sqlite(services: Services) -> None:
    # On PostgreSQL API appends never wait for the worker's writes: no limit there.
    assert services.db.is_sqlite
    assert services.consumer is not None
    assert services.consumer.max_write == 0.010
