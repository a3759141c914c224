"""SQLite: plain appends committed by the log writer child process.

What it must keep: nothing acknowledged before its commit, concurrent requests sharing
commits, a clear 503 (and nothing half-written) when the child cannot write or dies, and
the requests it does not take (an ``Idempotency-Key``) still going through the thread.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import Project, bearer, create_project, drain, make_services, make_settings
from tests.log.test_log_file import count, event_names
from tests.log.test_log_file import serving as log_file_serving
from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.domain.errors import ServiceUnavailable
from tidings.domain.ingest import LogEntry
from tidings.log.writer import LogWriterProcess

LOG_FILE = "tidings-log.db"


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Services, Project, httpx.AsyncClient]]:
    async with log_file_serving(tmp_path, log_writer="process") as served:
        yield served


def writer_of(services: Services) -> LogWriterProcess:
    writer = services.committer.direct
    assert writer is not None, "log_writer=process did not start a log writer"
    return writer


def child_pid(writer: LogWriterProcess) -> int:
    assert writer._proc is not None
    return writer._proc.pid


async def post_events(
    client: httpx.AsyncClient, project: Project, names: list[str], **headers: str
) -> httpx.Response:
    body = [{"name": name, "external_id": "u1"} for name in names]
    return await client.post("/api/client/events", json=body, headers=bearer(project.pk, **headers))


async def test_concurrent_requests_share_the_child_commits_and_are_applied(tmp_path: Path) -> None:
    async with serving(tmp_path) as (services, project, client):
        writer = writer_of(services)
        names = [f"E{n:03d}" for n in range(200)]
        responses = await asyncio.gather(*(post_events(client, project, [n]) for n in names))
        assert [r.status_code for r in responses] == [204] * 200
        assert writer.committed_items == 200
        assert 1 <= writer.commits < 200  # group commits, not one per request
        assert services.committer.committed_items == 200  # the health figures include it
        await drain(services)
        assert event_names(services) == names


async def test_every_acknowledged_entry_is_in_the_log_file_at_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, log_writer="process", run_worker=False)
    services = make_services(settings)
    services.start()
    try:
        project = create_project(services)
        transport = httpx.ASGITransport(app=create_app(services, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for n in range(1, 6):
                response = await post_events(client, project, [f"A{n}", f"B{n}"])
                assert response.status_code == 204
                # Read by another connection the moment the answer arrived.
                assert count(tmp_path / LOG_FILE) == 2 * n
    finally:
        services.stop()


async def test_requests_with_an_idempotency_key_still_go_through_the_thread(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (services, project, client):
        writer = writer_of(services)
        first = await post_events(client, project, ["Keyed"], **{"Idempotency-Key": "k-1"})
        again = await post_events(client, project, ["Keyed"], **{"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 204
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert writer.committed_items == 0  # the thread appended it, with its record
        assert services.committer.committed_items == 1
        await drain(services)
        assert event_names(services) == ["Keyed"]


async def test_a_failed_commit_is_a_503_and_writes_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path) as (services, project, client):
        assert (await post_events(client, project, ["Before"])).status_code == 204
        with sqlite3.connect(tmp_path / LOG_FILE) as conn:  # the child's insert now fails
            conn.execute("ALTER TABLE ingest_log RENAME TO ingest_log_away")
        failed = await post_events(client, project, ["Lost1", "Lost2"])
        assert_problem(failed, 503, "service_unavailable")
        assert "could not be written" in failed.json()["message"]
        with sqlite3.connect(tmp_path / LOG_FILE) as conn:
            conn.execute("ALTER TABLE ingest_log_away RENAME TO ingest_log")
        # The same child goes on: the next request is written.
        assert (await post_events(client, project, ["After"])).status_code == 204
        await drain(services)
        assert event_names(services) == ["After", "Before"]


async def test_a_child_that_dies_is_replaced_and_its_unconfirmed_requests_hear_503(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (services, project, client):
        writer = writer_of(services)
        assert (await post_events(client, project, ["One"])).status_code == 204
        first = child_pid(writer)
        os.kill(first, signal.SIGSTOP)  # it reads nothing more, answers nothing more
        try:
            waiting = asyncio.create_task(post_events(client, project, ["Unconfirmed"]))
            deadline = time.monotonic() + 10
            while not writer._sent:  # sent down the pipe, not answered
                assert time.monotonic() < deadline, "the request was never sent"
                await asyncio.sleep(0.01)
        finally:
            os.kill(first, signal.SIGKILL)
        assert_problem(await asyncio.wait_for(waiting, 15), 503, "service_unavailable")
        # A new child; from then on requests are written.
        deadline = time.monotonic() + 10
        while (await post_events(client, project, ["Two"])).status_code != 204:
            assert time.monotonic() < deadline, "no new log writer"
            await asyncio.sleep(0.1)
        assert child_pid(writer) != first and writer.starts == 2
        await drain(services)
        assert event_names(services) == ["One", "Two"]


async def test_a_child_that_cannot_open_the_log_fails_requests_instead_of_hanging(
    tmp_path: Path,
) -> None:
    writer = LogWriterProcess(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'log.db'}")
    writer.start()
    try:
        entry = LogEntry(1, "event", 0, {"name": "E", "message_id": "m"}, 0)
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(writer.append([entry]), 10)
    finally:
        writer.stop()


async def test_a_full_queue_is_refused_at_once(tmp_path: Path) -> None:
    writer = LogWriterProcess(f"sqlite:///{tmp_path / 'log.db'}", max_queued_items=1)
    writer.start()
    try:
        entries = [LogEntry(1, "event", 0, {"name": "E", "message_id": f"m{n}"}, 0) for n in (1, 2)]
        with pytest.raises(ServiceUnavailable, match="saturated"):
            await writer.append(entries)
    finally:
        writer.stop()


def ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def test_the_child_ignores_sigint_and_exits_when_its_input_closes(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path, log_writer="process", run_worker=False))
    services.start()
    writer = writer_of(services)
    pid = child_pid(writer)
    try:
        deadline = time.monotonic() + 20
        while not ignores_sigint(pid):  # its handlers are set once its imports are done
            assert time.monotonic() < deadline, "the log writer never ignored SIGINT"
            time.sleep(0.05)
        os.kill(pid, signal.SIGINT)  # a Ctrl-C reaches the whole process group
        time.sleep(0.3)
        assert writer.running()
    finally:
        services.stop()
    assert not writer.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_stopping_sends_what_is_queued_and_confirms_what_the_child_committed(
    tmp_path: Path,
) -> None:
    services = make_services(make_settings(tmp_path, log_writer="process", run_worker=False))
    services.start()
    try:
        writer = writer_of(services)
        entry = LogEntry(1, "event", 0, {"name": "Last", "message_id": "m-last"}, 0)
        appending = asyncio.create_task(writer.append([entry]))
        await asyncio.sleep(0)  # queued; its frame goes out at the end of this turn
        assert writer._pending
    finally:
        services.stop()  # as the server's shutdown does, on the event loop's thread
    await asyncio.wait_for(appending, 5)  # committed and confirmed, not a 503
    assert count(tmp_path / LOG_FILE) == 1
