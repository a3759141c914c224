"""A full disk under the embedded SQLite database: a clear 503, no corruption, recovery.

Each test mounts a tmpfs of a few megabytes (root or CAP_SYS_ADMIN; skipped otherwise),
puts the database on it, and then fills it with a filler file, so that SQLite's writes
really fail with ENOSPC (``SQLITE_FULL``). Checked, against a real ``tidings serve`` and
in-process:

- every request that needs a write answers ``503 service_unavailable`` in the problem
  envelope, with ``Retry-After`` and a message saying that the disk is full (never a 500),
  and the process neither crashes nor wedges;
- reads go on (a user's profile, ``/api/health``);
- the worker's batch commit fails and is retried; the WAL checkpoint fails and is retried;
- once the filler is removed, writes are accepted again without a restart, the log drains,
  every acknowledged event is stored exactly once, nothing refused is stored, and
  ``PRAGMA integrity_check`` is ok.

Two things make it deterministic. A WAL that was fully checkpointed is reused from its
start, so writes that fit in it would still succeed on a full disk: the test empties the
WAL and keeps a read snapshot of its own open while the server appends (``Snapshot``), so
that nothing can be checkpointed before the disk is full. And the worker's backlog comes
from holding the SQLite worker lease (``<db>.worker-lock``) while events are accepted, as
another ``tidings worker`` would, and letting go of it once the disk is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import bearer, drain, make_services, make_settings
from tests.conftest import create_project as create_project_in_process
from tests.e2e.server import Server, create_project
from tidings.api.app import create_app
from tidings.api.errors import database_unavailable
from tidings.bootstrap import Services
from tidings.domain.errors import ServiceUnavailable
from tidings.domain.ingest import AppendOutcome, AppendRequest, LogEntry
from tidings.log.committer import STORAGE_FULL_RETRY_AFTER, GroupCommitter, storage_full
from tidings.log.database import log_file_path

DISK_SIZE = "4m"
MAX_ANSWER = 5.0  # seconds: the longest a request may take to be answered on a full disk
HANG = 20.0  # seconds: a request still unanswered by then hangs (the test fails, cleanly)

pytestmark = pytest.mark.timeout(90)


# -- a small filesystem, and what fills it ---------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``DISK_SIZE`` mounted for the test, unmounted afterwards."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command to mount a small filesystem with")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "mounting a small tmpfs to fill up needs root or CAP_SYS_ADMIN: "
            + (mounted.stderr.strip().splitlines() or [f"mount exited {mounted.returncode}"])[0]
        )
    try:
        yield mount_point
    finally:
        # A process still holding a file there (a failed test) makes it busy: detach it.
        if subprocess.run(["umount", str(mount_point)], timeout=10, check=False).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], timeout=10, check=False)


class Filler:
    """A file that takes every byte left on a filesystem, until it is removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "filler"

    def fill(self) -> int:
        limit = 1 << 30  # a mount without a size limit would fill RAM: give up instead
        written = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 16, 4096, 1):  # the last pages to the last byte
                block = b"\0" * size
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    assert written < limit, "the filesystem does not fill up"
        finally:
            os.close(fd)
        assert os.statvfs(self.directory).f_bavail == 0
        return written

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Snapshot:
    """An empty WAL, then a read transaction of the test's own, on the database and on
    the ingest log's file beside it.

    While it is open no checkpoint can copy what is committed after it into the database
    file, so the WAL grows with every commit and cannot be reused from its start. Once the
    disk is full, every write needs WAL space there is not, and the checkpoint needs to grow
    the database file: both fail, whatever the timing of the server's checkpointer."""

    def __init__(self, database: Path) -> None:
        self.conns = []
        for path in (database, Path(log_file_path(str(database)))):
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            for _ in range(100):  # busy while the server's checkpointer or a commit runs
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    break
                time.sleep(0.02)
            assert not busy, f"could not empty the WAL of {path}"
            assert Path(f"{path}-wal").stat().st_size == 0
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM ingest_log").fetchone()
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.execute("COMMIT")
            conn.close()


class WorkerLease:
    """The SQLite worker lease (``<db>.worker-lock``), held as another worker would: a
    server started meanwhile accepts events but applies none until it is released."""

    def __init__(self, database: Path) -> None:
        self.fd: int | None = os.open(f"{database}.worker-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def padding(size: int) -> dict[str, Any]:
    """Event fields of about ``size`` bytes: a backlog big enough that checkpointing it
    must grow the database file (not just reuse its free pages)."""
    return {"data": {"padding": "x" * size}} if size else {}


def assert_disk_full(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) == STORAGE_FULL_RETRY_AFTER
    message = body["message"].lower()
    assert "disk is full" in message and "retry" in message, message
    return body


def integrity_and_events(database: Path) -> dict[str, list[str]]:
    """Event name → the message ids stored under it, once the database is at rest; checks
    ``PRAGMA integrity_check`` of the database and the log file, and that every entry of
    the log was applied."""
    with contextlib.closing(sqlite3.connect(log_file_path(str(database)))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        head = conn.execute("SELECT max(seq) FROM ingest_log").fetchone()[0]
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM ingest_log").fetchone() == (0,)
        applied = conn.execute("SELECT max(seq) FROM log_positions").fetchone()[0]
        assert head is None or head <= applied, (head, applied)
        stored: dict[str, list[str]] = {}
        for name, message_id in conn.execute("SELECT name, message_id FROM events"):
            stored.setdefault(name, []).append(message_id)
        return stored


def assert_stored_once(
    stored: dict[str, list[str]], acknowledged: dict[str, list[str]], keyed: dict[str, int]
) -> None:
    """Each acknowledged message id exactly once under its name; ``keyed`` names (sent with
    an Idempotency-Key and no message ids) that many times; nothing else."""
    every = [m for ids in stored.values() for m in ids]
    assert len(every) == len(set(every)), "an event was stored twice"
    expected = {name: sorted(ids) for name, ids in acknowledged.items()}
    assert {n: sorted(ids) for n, ids in stored.items() if n in expected} == expected
    assert {n: len(ids) for n, ids in stored.items() if n not in expected} == keyed


# -- a real `tidings serve` ------------------------------------------------------------------


class Output:
    """A process's output, read as it comes: a pipe nobody reads fills up, and then the
    server's logging blocks."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for(self, text: str, times: int = 1, timeout: float = 10.0) -> float:
        started = time.monotonic()
        while self.count(text) < times:
            assert time.monotonic() - started < timeout, (
                f"never logged {times}x: {text}\n" + "".join(self.lines[-40:])
            )
            time.sleep(0.02)
        return time.monotonic() - started

    def join(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


@contextlib.contextmanager
def serving(database: Path) -> Iterator[tuple[Server, Output, dict[str, Any]]]:
    """``tidings serve`` (API and worker thread; API keys read on every request); on the way
    out it is stopped with SIGTERM and ``result`` gets its exit code and output."""
    server = Server(
        database, command="serve", TIDINGS_KEY_CACHE_TTL="0", TIDINGS_WORKER_MODE="thread"
    ).start()
    process = server.process
    assert process is not None and process.stdout is not None
    output = Output(process.stdout)
    result: dict[str, Any] = {}
    try:
        yield server, output, result
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        result["returncode"] = process.returncode
        result["output"] = output.join()
        server.stop()  # the process has ended and its output was read: bookkeeping only


class Client:
    """Requests to a server; keeps which message ids were acknowledged, by event name."""

    def __init__(self, http: httpx.Client | None, public: str, secret: str) -> None:
        self.http = http
        self.public = public
        self.secret = secret
        self.statuses: list[int] = []
        self.acknowledged: dict[str, list[str]] = {}
        self.refused: list[str] = []
        self.slowest = 0.0

    def _timed(self, method: str, path: str, key: str, body: Any, **headers: str) -> httpx.Response:
        assert self.http is not None
        started = time.monotonic()
        response = self.http.request(method, path, json=body, headers=bearer(key, **headers))
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.statuses.append(response.status_code)
        return response

    def event(self, name: str, message_id: str, user: str = "u0", size: int = 0) -> httpx.Response:
        body = [{"name": name, "external_id": user, "message_id": message_id, **padding(size)}]
        response = self._timed("POST", "/api/client/events", self.public, body)
        if response.status_code == 204:
            self.acknowledged.setdefault(name, []).append(message_id)
        else:
            self.refused.append(message_id)
        return response

    def keyed(self, name: str, key: str, n: int = 2) -> httpx.Response:
        """``n`` events without message ids under an Idempotency-Key (derived ids)."""
        body = [{"name": name, "external_id": f"u{i % 3}"} for i in range(n)]
        return self._timed(
            "POST", "/api/client/events", self.public, body, **{"Idempotency-Key": key}
        )

    def identify(self) -> httpx.Response:
        body = {"external_id": "u1", "data": {"plan": "pro"}}
        return self._timed("POST", "/api/client/identify", self.public, body)

    def create_list(self, key: str) -> httpx.Response:
        body = {"name": "Full disk", "type": "static"}
        return self._timed(
            "POST", "/api/client/lists", self.secret, body, **{"Idempotency-Key": key}
        )

    def user(self, external_id: str = "u0") -> httpx.Response:
        return self._timed("GET", f"/api/client/users/{external_id}", self.secret, None)


def test_a_server_on_a_full_disk_answers_503_and_recovers_by_itself(small_disk: Path) -> None:
    database = small_disk / "tidings.db"
    keys = create_project(database)
    client = Client(None, keys["public_key"], keys["secret_key"])

    # A first run applies the users that reads will look at during the fault.
    with serving(database) as (server, _, _), httpx.Client(base_url=server.url) as http:
        client.http = http
        for n in range(3):
            assert client.event("Seed", f"seed{n}", user=f"u{n}").status_code == 204
        server.wait_drained(20)

    lease = WorkerLease(database)  # the next server's worker waits for it: a backlog
    snapshot = None
    filler = Filler(small_disk)
    try:
        with (
            serving(database) as (server, output, result),
            httpx.Client(base_url=server.url, timeout=HANG) as http,
        ):
            client.http = http
            snapshot = Snapshot(database)
            for n in range(10):
                response = client.event("Backlog", f"backlog{n}", user=f"u{n % 3}", size=8000)
                assert response.status_code == 204
            assert client.keyed("KeyedBefore", "before-full").status_code == 204
            assert server.health()["log_lag"] == 12

            filler.fill()
            snapshot.close()  # the checkpointer tries now: it cannot grow the file
            snapshot = None
            client.slowest = 0.0
            assert_disk_full(client.event("Refused", "refused0"))  # the log writer's commit
            output.wait_for("the database's disk is full (")  # said by the server, too
            assert_disk_full(client.keyed("KeyedDuring", "during-full"))
            assert_disk_full(client.keyed("KeyedDuring", "during-full"))  # not "in progress"
            assert_disk_full(client.identify())
            assert_disk_full(client.create_list("list-1"))  # a direct write, not the log
            # Reads go on: keys (read on every request), profiles, the log's lag.
            user = client.user("u1")
            assert user.status_code == 200, user.text
            assert server.health()["log_lag"] == 12

            # The worker takes the lease; its batch commit fails, and is retried.
            lease.release()
            output.wait_for("processing a log batch failed: the disk is full", times=2)
            output.wait_for("WAL checkpoint failed")
            health = server.health()
            assert (health["log_lag"], health["processed"]) == (12, 0)
            for n in range(1, 6):  # still a clean 503, fast, and nothing wedged
                assert_disk_full(client.event("Refused", f"refused{n}"))
            assert client.user("u2").status_code == 200
            slowest_503 = client.slowest
            assert slowest_503 < MAX_ANSWER

            filler.remove()
            started = time.monotonic()
            n = 0
            while (response := client.event("After", f"after{n}")).status_code != 204:
                assert_disk_full(response)  # each attempt on the way must still be clean
                assert time.monotonic() - started < 10, "writes not accepted again"
                n += 1
                time.sleep(0.1)
            recovered = time.monotonic() - started
            for n in range(100, 105):
                assert client.event("After", f"after{n}").status_code == 204
            assert client.keyed("KeyedDuring", "during-full").status_code == 204
            assert client.create_list("list-1").status_code == 201
            assert client.create_list("list-1").headers.get("idempotent-replayed") == "true"
            started = time.monotonic()
            server.wait_drained(20)  # the worker's retry may be in a backoff of seconds
            drained = time.monotonic() - started
            assert client.user("u1").json()["data"] == {}  # identify was refused
    finally:
        if snapshot is not None:
            snapshot.close()
        lease.release()
        filler.remove()

    output_text = result["output"]
    assert result["returncode"] in (0, -signal.SIGTERM), output_text
    assert 500 not in client.statuses, output_text
    assert "unhandled error" not in output_text, output_text
    stored = integrity_and_events(database)
    assert_stored_once(stored, client.acknowledged, {"KeyedBefore": 2, "KeyedDuring": 2})
    assert not set(client.refused) & {m for ids in stored.values() for m in ids}
    print(
        f"\nserver: slowest 503 {slowest_503:.3f} s; accepted again {recovered:.2f} s after "
        f"the filler went; drained {drained:.2f} s later; log lines: "
        f"{output.count('ingest log append failed')} failed group commits (one line each), "
        f"{output.count('processing a log batch failed')} worker retries (one line each) and "
        f"{output.count('WAL checkpoint failed')} checkpoint warnings (one line each); "
        f"exit code {result['returncode']}"
    )


# -- in-process: many requests at once, and a restart while the disk is full ----------------


async def test_in_process_a_full_disk_fails_every_waiting_request_and_survives_a_restart(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def services_on_disk() -> Services:
        return make_services(make_settings(small_disk, sqlite_synchronous="FULL"))

    database = small_disk / "tidings.db"
    services = services_on_disk()
    project = create_project_in_process(services)
    lease = WorkerLease(database)
    filler = Filler(small_disk)
    snapshot: Snapshot | None = None
    acknowledged: list[str] = []
    statuses: list[int] = []
    try:
        services.start()
        app = create_app(services, manage_lifecycle=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:

            async def event(
                message_id: str, *, size: int = 0, key: str | None = None
            ) -> httpx.Response:
                headers = {"Idempotency-Key": key} if key else {}
                response = await client.post(
                    "/api/client/events",
                    json=[
                        {
                            "name": "E",
                            "external_id": "u1",
                            "message_id": message_id,
                            **padding(size),
                        }
                    ],
                    headers=bearer(project.pk, **headers),
                )
                statuses.append(response.status_code)
                if response.status_code == 204:
                    acknowledged.append(message_id)
                return response

            snapshot = Snapshot(database)
            for n in range(10):
                assert (await event(f"before{n}", size=8000)).status_code == 204
            filler.fill()
            snapshot.close()
            snapshot = None
            with caplog.at_level(logging.INFO):
                # Everything at once: the group commit fails for each waiter.
                answers = await asyncio.wait_for(
                    asyncio.gather(
                        *(event(f"during{n}") for n in range(20)),
                        *(event(f"keyed{n}", key=f"k{n}") for n in range(5)),
                        client.patch(
                            "/api/client/users",
                            json=[{"external_id": "u1", "data": {"a": 1}}],
                            headers=bearer(project.sk),
                        ),
                    ),
                    HANG,
                )
                for response in answers:
                    assert_disk_full(response)
                failures = [r for r in caplog.records if r.name == "tidings.log.committer"]
                assert failures and all("disk is full" in r.getMessage() for r in failures)
                assert all(r.exc_info is None for r in failures)  # one line, no traceback
            assert (await client.get("/api/health")).json()["log_lag"] == 10
            lease.release()
            deadline = time.monotonic() + 10
            while not any("retrying" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the worker never failed a batch"
                await asyncio.sleep(0.05)
        # Stopped while the disk is full: it must not hang, and must not lose the backlog.
        # The database's WAL holds nothing the last connection cannot checkpoint (the
        # worker's commits failed), so closing it would remove its -wal and -shm files,
        # which SQLite cannot create again on a disk without a byte free: a reader of the
        # test's own keeps them, as another process using the database would.
        keeper = sqlite3.connect(database, isolation_level=None)
        keeper.execute("SELECT count(*) FROM log_positions").fetchone()
        started = time.monotonic()
        services.stop()
        assert time.monotonic() - started < 5

        # Started again on the full disk: reads work, writes are a clean 503.
        services = services_on_disk()
        keeper.close()
        services.start()
        app = create_app(services, manage_lifecycle=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/api/health")).json()["log_lag"] == 10
            assert_disk_full(await event("restarted"))

            filler.remove()
            assert (await event("after")).status_code == 204
            assert (await event("keyed0", key="k0")).status_code == 204
            await drain(services, timeout=20)
            user = await client.get("/api/client/users/u1", headers=bearer(project.sk))
            assert user.status_code == 200, user.text
    finally:
        if snapshot is not None:
            snapshot.close()
        lease.release()
        services.stop()
        filler.remove()

    assert 500 not in statuses
    stored = integrity_and_events(database)
    assert sorted(stored["E"]) == sorted(acknowledged)
    assert len(stored["E"]) == len(set(stored["E"])) == 12


# -- unit level: what counts as a full disk, and what it is answered -------------------------


def _sqlite_full() -> sa.exc.OperationalError:
    """A real SQLITE_FULL, as SQLAlchemy raises it (a database capped at a few pages)."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA max_page_count = 3")
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
            for _ in range(10):
                conn.exec_driver_sql("INSERT INTO t VALUES (zeroblob(4000))")
    except sa.exc.OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the capped database did not fill up")


class _DiskFull(Exception):
    sqlstate = "53100"  # PostgreSQL's disk_full, as psycopg's errors carry it


def test_a_full_disk_is_told_apart_from_other_database_errors() -> None:
    full = _sqlite_full()
    assert isinstance(full.orig, sqlite3.OperationalError)
    assert full.orig.sqlite_errorname == "SQLITE_FULL"
    assert storage_full(full) and storage_full(full.orig)
    wrapped = ServiceUnavailable("x")
    wrapped.__cause__ = full
    assert storage_full(wrapped)
    assert storage_full(sa.exc.OperationalError("COMMIT", {}, _DiskFull("could not extend")))

    with (
        contextlib.closing(sqlite3.connect(":memory:")) as conn,
        pytest.raises(sqlite3.OperationalError) as missing,
    ):
        conn.execute("SELECT * FROM missing")
    assert not storage_full(missing.value)  # SQLITE_ERROR
    assert not storage_full(sa.exc.OperationalError("SELECT", {}, Exception("refused")))
    assert not storage_full(OSError(errno.ENOSPC, "No space left on device"))  # not the database

    answer = database_unavailable(full)
    assert answer.retry_after == STORAGE_FULL_RETRY_AFTER
    assert "disk is full" in answer.message
    other = database_unavailable(sa.exc.OperationalError("SELECT", {}, Exception("refused")))
    assert other.message == "The database is unavailable; retry shortly."


class _FullLog:
    partitions = 1

    def __init__(self, error: Exception) -> None:
        self.error = error

    def append(self, requests: list[AppendRequest]) -> list[AppendOutcome]:
        raise self.error


async def test_the_committer_answers_a_full_disk_in_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = AppendRequest([LogEntry(1, "event", 0, {"name": "E"}, 0)])
    for error, message, retry_after, traceback in (
        (_sqlite_full(), "disk is full", STORAGE_FULL_RETRY_AFTER, False),
        (OSError("boom"), "could not be written", 1, True),
    ):
        caplog.clear()
        committer = GroupCommitter(_FullLog(error))  # type: ignore[arg-type]
        committer.start()
        try:
            with pytest.raises(ServiceUnavailable) as refused:
                await asyncio.wait_for(committer.append(request), 5)
        finally:
            committer.stop()
        assert message in refused.value.message
        assert refused.value.retry_after == retry_after
        assert refused.value.__cause__ is error
        [record] = [r for r in caplog.records if r.name == "tidings.log.committer"]
        assert (record.exc_info is not None) is traceback


async def test_a_full_disk_is_logged_once_per_ten_seconds_not_per_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = AppendRequest([LogEntry(1, "event", 0, {"name": "E"}, 0)])
    committer = GroupCommitter(_FullLog(_sqlite_full()))  # type: ignore[arg-type]
    committer.start()
    try:
        for _ in range(5):
            with pytest.raises(ServiceUnavailable):
                await asyncio.wait_for(committer.append(request), 5)
    finally:
        committer.stop()
    records = [r for r in caplog.records if r.name == "tidings.log.committer"]
    assert len(records) == 1, [r.getMessage() for r in records]
