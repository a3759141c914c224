"""The ingest log on NATS JetStream, against a real nats-server (TIDINGS_TEST_NATS_URL).

Each test uses its own stream and subject prefix and deletes the stream afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import httpx
import nats
import pytest
import sqlalchemy as sa
from nats.js.errors import NotFoundError

from tidings.api.app import create_app
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, IdempotencyRecord, LogEntry
from tidings.log.nats import LogUnavailable, NatsLog, StreamMismatch
from tidings.settings import Settings
from tidings.store import migrate
from tidings.store.database import Database, open_database
from tidings.store.idempotency import IdempotencyStore
from tidings.store.tables import idempotency_keys, log_positions

from ..conftest import Project, bearer, create_project, drain, make_services, make_settings

OpenLog = Callable[..., NatsLog]


@pytest.fixture
def nats_url() -> str:
    url = os.environ.get("TIDINGS_TEST_NATS_URL")
    required = bool(os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"))
    if not url:
        if required:
            pytest.fail("TIDINGS_TEST_REQUIRE_SERVICES is set but TIDINGS_TEST_NATS_URL is not")
        pytest.skip("TIDINGS_TEST_NATS_URL is not set: the JetStream log tests need nats-server")
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), 3).close()
    except OSError as exc:
        if required:
            pytest.fail(f"TIDINGS_TEST_NATS_URL names an unreachable server: {exc}")
        pytest.skip(f"TIDINGS_TEST_NATS_URL names an unreachable server: {exc}")
    return url


def _unique() -> tuple[str, str]:
    name = f"TEST_{uuid.uuid4().hex[:12].upper()}"
    return name, f"test.{name.lower()}"


def _admin(url: str, action: Callable[[Any], Any]) -> None:
    """Run ``action(jetstream)`` on a connection of its own (any thread, any loop)."""

    async def run() -> None:
        nc = await nats.connect(url, max_reconnect_attempts=1)
        try:
            await action(nc.jetstream())
        finally:
            await nc.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result(30)


def _delete_stream(url: str, stream: str) -> None:
    async def delete(js: Any) -> None:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)

    _admin(url, delete)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'log.db'}", sqlite_synchronous="NORMAL")
    migrate.upgrade(database.writer)
    yield database
    database.dispose()


@pytest.fixture
def stream() -> tuple[str, str]:
    return _unique()


@pytest.fixture
def open_log(nats_url: str, db: Database, stream: tuple[str, str]) -> Iterator[OpenLog]:
    opened: list[NatsLog] = []

    def open_(partitions: int = 4, *, database: Database = db, **options: Any) -> NatsLog:
        query = urlencode({"stream": stream[0], "prefix": stream[1], "timeout": 2, **options})
        log = NatsLog(f"{nats_url}?{query}", database.writer, database.reader, partitions)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()
    _delete_stream(nats_url, stream[0])


def event(n: int, partition: int, *, project_id: int = 1, **payload: Any) -> LogEntry:
    body = {"name": "E", "n": n, "message_id": f"m{n}", **payload}
    return LogEntry(project_id, "event", partition, body, accepted_at=1_000 + n)


def key(name: str = "k-1") -> IdempotencyRecord:
    return IdempotencyRecord(1, name, request_hash="h", created_at=5, status=204, body=b"")


def test_read_all_returns_every_entry_in_stream_order_with_exact_sequences(
    open_log: OpenLog,
) -> None:
    log = open_log(4)
    assert log.last_seq() == 0
    assert log.read_all(0, 10) == []
    log.append([AppendRequest([event(n, n % 4)]) for n in range(6)])
    log.append([AppendRequest([event(6, 3, big=2**70), event(7, 0)])])
    records = log.read_all(0, 100)
    assert [r.seq for r in records] == list(range(1, 9))
    assert [(r.payload["n"], r.partition) for r in records] == [(n, n % 4) for n in range(6)] + [
        (6, 3),
        (7, 0),
    ]
    first = records[0]
    assert (first.project_id, first.kind, first.accepted_at) == (1, "event", 1_000)
    assert records[6].payload["big"] == 2**70
    assert log.last_seq() == 8
    assert log.read_all(8, 100) == []
    # Any position, forwards or back (a batch retried after a failed commit).
    assert [r.seq for r in log.read_all(3, 2)] == [4, 5]
    assert [r.seq for r in log.read_all(5, 100)] == [6, 7, 8]
    assert [r.seq for r in log.read_all(1, 1)] == [2]


def test_each_partition_reads_its_own_entries_in_order(open_log: OpenLog) -> None:
    log = open_log(3)
    log.append([AppendRequest([event(n, n % 3) for n in range(30)])])
    for partition in (0, 2, 1):
        seen, after = [], 0
        while batch := log.read(partition, after, 4):
            seen += batch
            after = batch[-1].seq
        assert [r.payload["n"] for r in seen] == list(range(partition, 30, 3))
        assert {r.partition for r in seen} == {partition}
        assert [r.seq for r in seen] == [n + 1 for n in range(partition, 30, 3)]
    # New entries reach a reader that stands at the end of its partition.
    log.append([AppendRequest([event(30, 0), event(31, 1)])])
    assert [r.payload["n"] for r in log.read(0, 28, 10)] == [30]


def test_a_reopened_log_reads_on_from_a_stored_position(open_log: OpenLog) -> None:
    log = open_log(2)
    log.append([AppendRequest([event(n, n % 2) for n in range(10)])])
    assert [r.seq for r in log.read_all(0, 4)] == [1, 2, 3, 4]
    log.close()
    again = open_log(2)
    assert [r.seq for r in again.read_all(4, 100)] == [5, 6, 7, 8, 9, 10]
    assert [r.seq for r in again.read(1, 4, 100)] == [6, 8, 10]


def test_a_new_stream_starts_after_the_positions_the_database_stored(
    open_log: OpenLog, db: Database
) -> None:
    # E.g. switching from TIDINGS_LOG_URL=db: the consumer would skip entries at or
    # below its stored positions.
    with db.writer.begin() as conn:
        conn.execute(sa.insert(log_positions), [{"partition": 0, "seq": 500}])
    log = open_log(2)
    outcome = log.append([AppendRequest([event(1, 1)], want_positions=True)])
    assert outcome[0].positions == [(1, 501)]
    assert log.pending() == 1


def test_positions_come_back_when_wanted(open_log: OpenLog) -> None:
    log = open_log(4)
    outcomes = log.append(
        [
            AppendRequest([event(0, 1), event(1, 2)], want_positions=True),
            AppendRequest([event(2, 0)]),
            AppendRequest([event(3, 3)], want_positions=True),
        ]
    )
    assert [o.appended for o in outcomes] == [True, True, True]
    assert [o.positions for o in outcomes] == [[(1, 1), (2, 2)], [], [(3, 4)]]
    assert log.heads() == {0: 3, 1: 1, 2: 2, 3: 4}


def test_an_entry_published_twice_is_stored_once(open_log: OpenLog) -> None:
    log = open_log(2)
    log.append([AppendRequest([event(1, 0)])])
    again = log.append([AppendRequest([event(1, 0)], want_positions=True)])
    assert again[0].positions == [(0, 1)]  # the server answers with the first copy
    assert log.last_seq() == 1
    # The same message id in another project is another message; no id, no dedup.
    log.append([AppendRequest([event(1, 0, project_id=2)])])
    plain = LogEntry(1, "identify", 1, {"external_id": "u"}, accepted_at=1)
    log.append([AppendRequest([plain]), AppendRequest([plain])])
    assert [r.seq for r in log.read_all(0, 10)] == [1, 2, 3, 4]


def test_one_request_wins_an_idempotency_key(open_log: OpenLog, db: Database) -> None:
    log = open_log(2)
    outcomes = log.append(
        [AppendRequest([event(1, 0)], key()), AppendRequest([event(2, 0)], key())]
    )
    assert [o.appended for o in outcomes] == [True, False]
    later = log.append([AppendRequest([event(3, 0)], key()), AppendRequest([event(4, 1)])])
    assert [o.appended for o in later] == [False, True]
    assert [r.payload["n"] for r in log.read_all(0, 10)] == [1, 4]
    assert IdempotencyStore(db.writer, db.reader).get(1, "k-1") == key()


def test_a_claim_is_removed_when_publishing_fails(
    open_log: OpenLog, db: Database, nats_url: str, stream: tuple[str, str]
) -> None:
    log = open_log(2)
    _delete_stream(nats_url, stream[0])  # nothing stores the subjects any more
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - no responders, or no ack in time
        log.append([AppendRequest([event(1, 0)], key())])
    assert time.monotonic() - started < 5
    assert IdempotencyStore(db.writer, db.reader).get(1, "k-1") is None


def test_requests_without_a_key_never_touch_the_database(open_log: OpenLog, tmp_path: Path) -> None:
    # A database without tables: a claim would fail, plain appends must not.
    bare = open_database(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        log = open_log(2, database=bare)
        assert log.append([AppendRequest([event(1, 0)])])[0].appended
        with pytest.raises(sa.exc.OperationalError):
            log.append([AppendRequest([event(2, 0)], key())])
        assert log.last_seq() == 1
    finally:
        bare.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_fails_within_a_bounded_time(db: Database) -> None:
    started = time.monotonic()
    with pytest.raises(LogUnavailable):
        NatsLog(f"nats://127.0.0.1:{_free_port()}?timeout=1", db.writer, db.reader, 2)
    assert time.monotonic() - started < 4


class _Relay:
    """A TCP relay to the NATS server that a test can cut, as a network failure would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.target = target
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_calls_during_a_disconnect_fail_within_a_bounded_time(
    open_log: OpenLog, nats_url: str, db: Database, stream: tuple[str, str]
) -> None:
    open_log(2)  # creates the stream
    parsed = urlparse(nats_url)
    relay = _Relay((parsed.hostname or "127.0.0.1", parsed.port or 4222))
    query = urlencode({"stream": stream[0], "prefix": stream[1], "timeout": 1})
    log = NatsLog(f"nats://127.0.0.1:{relay.port}?{query}", db.writer, db.reader, 2)
    try:
        log.append([AppendRequest([event(1, 0)], key())])
        assert [r.seq for r in log.read_all(0, 10)] == [1]
        relay.cut()
        for call in (
            lambda: log.append([AppendRequest([event(2, 0)], key("k-2"))]),
            lambda: log.read_all(1, 10),
            lambda: log.read(1, 0, 10),
            log.last_seq,
        ):
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - LogUnavailable or a NATS timeout
                call()
            assert time.monotonic() - started < 4
        assert IdempotencyStore(db.writer, db.reader).get(1, "k-2") is None
    finally:
        log.close()


def _store_positions(db: Database, positions: dict[int, int]) -> None:
    """What the consumer stores with each batch it applies."""
    with db.writer.begin() as conn:
        conn.execute(sa.delete(log_positions))
        conn.execute(
            sa.insert(log_positions), [{"partition": p, "seq": s} for p, s in positions.items()]
        )


def test_trim_forgets_the_entries_below_the_oldest_unprocessed_one(
    open_log: OpenLog, db: Database
) -> None:
    log = open_log(3)
    # partition 0: 1, 3, 5, 7, 9; partition 1: 2, 4, 6, 8, 10; partition 2: none
    log.append([AppendRequest([event(n, n % 2) for n in range(10)])])
    assert log.trim(0, 5) == 0  # log_positions says nothing is processed yet
    _store_positions(db, {0: 5, 1: 4})
    assert log.trim(0, 5) == 4  # 1 … 4: 5 stays, as 6 is not processed
    assert [r.seq for r in log.read(0, 0, 100)] == [5, 7, 9]
    assert [r.seq for r in log.read_all(0, 100)] == [5, 6, 7, 8, 9, 10]
    assert log.trim(1, 0) == 0
    # A partition without unprocessed entries holds nothing back, however old its
    # position: partition 1 processed everything, partition 0 up to 7.
    _store_positions(db, {0: 7, 1: 10, 2: 0})
    assert log.trim(1, 10) == 3  # 5, 6, 7
    assert [r.seq for r in log.read_all(0, 100)] == [8, 9, 10]
    assert log.trim(1, 10) == 0
    _store_positions(db, {0: 9, 1: 10, 2: 0})
    assert log.trim(0, 9) == 3
    assert log.read_all(0, 100) == []
    assert log.last_seq() == 10  # sequences are never reused
    assert log.heads() == {}
    log.append([AppendRequest([event(10, 2)])])
    assert [r.seq for r in log.read_all(9, 100)] == [11]


def test_trimming_never_makes_a_reader_of_every_partition_skip_entries(
    open_log: OpenLog, db: Database
) -> None:
    # nats-server 2.9 moves every consumer of more than one subject to the first remaining
    # entry of a subject purged by filter, even by a purge that removes nothing: a worker
    # holding every partition (read_all) then skipped other partitions' unprocessed
    # entries after each trim (an acknowledged event lost in tests/e2e/test_topology.py).
    log = open_log(2)
    other = open_log(2)  # another worker's connection, trimming what it processed
    # partition 0: 1, 4; partition 1: 2, 3
    log.append([AppendRequest([event(0, 0), event(1, 1), event(2, 1), event(3, 0)])])
    assert [r.seq for r in log.read_all(0, 2)] == [1, 2]
    _store_positions(db, {0: 1, 1: 2})  # the batch applied
    log.trim(0, 1)
    log.trim(1, 2)
    log.append([AppendRequest([event(4, 0), event(5, 1)])])  # 5, 6
    assert [r.seq for r in log.read_all(2, 2)] == [3, 4]
    _store_positions(db, {0: 4, 1: 3})
    other.trim(0, 4)
    other.trim(0, 4)  # nothing left to remove there
    assert [r.seq for r in log.read_all(4, 100)] == [5, 6]
    # A reader that starts from the lowest stored position (a worker taking every
    # partition over), while the other worker trims.
    fresh = open_log(2)
    assert [r.seq for r in fresh.read_all(3, 1)] == [4]
    other.trim(1, 3)
    assert [r.seq for r in fresh.read_all(4, 100)] == [5, 6]


def test_a_partition_taken_over_from_a_stored_position_loses_nothing_to_trims(
    open_log: OpenLog, db: Database
) -> None:
    # Worker A reads partition 0, worker B partition 1, each from the stored position,
    # while entries keep coming and both trim what they applied; then A is gone and B
    # holds both partitions: it reads the whole stream from the lowest stored position.
    a, b = open_log(2), open_log(2)
    seen: dict[int, list[int]] = {0: [], 1: []}
    positions = {0: 0, 1: 0}
    for n in range(12):
        a.append([AppendRequest([event(n, n % 3 % 2)])])
        for partition, reader in ((0, a), (1, b)):
            for record in reader.read(partition, positions[partition], 2):
                seen[partition].append(record.seq)
                positions[partition] = record.seq
        _store_positions(db, positions)
        a.trim(0, positions[0])
        b.trim(1, positions[1])
    a.append([AppendRequest([event(n, n % 2) for n in range(12, 20)])])
    low = min(positions.values())
    while records := b.read_all(low, 3):
        for record in records:
            if record.seq > positions[record.partition]:
                seen[record.partition].append(record.seq)
                positions[record.partition] = record.seq
        low = records[-1].seq
        _store_positions(db, positions)
        for partition in (0, 1):
            b.trim(partition, positions[partition])
    partition_of = [n % 3 % 2 for n in range(12)] + [n % 2 for n in range(12, 20)]
    for partition in (0, 1):
        assert seen[partition] == [s + 1 for s, p in enumerate(partition_of) if p == partition]


def test_pending_counts_entries_after_the_stored_positions(open_log: OpenLog, db: Database) -> None:
    log = open_log(2)
    assert log.pending() == 0
    log.append([AppendRequest([event(n, n % 2) for n in range(10)])])
    assert log.pending() == 10
    with db.writer.begin() as conn:  # what the consumer stores with each batch
        conn.execute(
            sa.insert(log_positions), [{"partition": 0, "seq": 5}, {"partition": 1, "seq": 4}]
        )
    assert log.pending() == 2 + 3  # 7, 9 and 6, 8, 10
    with db.writer.begin() as conn:
        conn.execute(sa.update(log_positions).values(seq=10))
    assert log.pending() == 0


def test_a_stream_with_another_partition_count_is_refused(open_log: OpenLog) -> None:
    open_log(4)
    with pytest.raises(StreamMismatch, match="4 partitions but TIDINGS_LOG_PARTITIONS is 3"):
        open_log(3)


# -- end to end: build() + start() with TIDINGS_LOG_URL=nats://… on SQLite ----------------


@pytest.fixture
def settings(tmp_path: Path, nats_url: str) -> Iterator[Settings]:
    """Overrides the conftest fixture: the services of these tests log to JetStream."""
    name, prefix = _unique()
    yield make_settings(tmp_path, log_url=f"{nats_url}?stream={name}&prefix={prefix}")
    _delete_stream(nats_url, name)


async def test_events_sent_through_the_api_are_processed_exactly_once(
    client: httpx.AsyncClient, services: Services, project: Project
) -> None:
    assert isinstance(services.log, NatsLog)
    body = [
        {"name": "Order placed", "external_id": f"u_{n % 3}", "message_id": f"o-{n}"}
        for n in range(12)
    ]
    assert (
        await client.post("/api/client/events", json=body, headers=bearer(project.pk))
    ).status_code == 204
    # A client retrying part of it (same message ids) has no second effect.
    retry = await client.post("/api/client/events", json=body[:4], headers=bearer(project.pk))
    assert retry.status_code == 204
    keyed = bearer(project.pk, **{"Idempotency-Key": "signup-1"})
    signup = [{"name": "Signed up", "external_id": "u_0"}]
    assert (await client.post("/api/client/events", json=signup, headers=keyed)).status_code == 204
    replay = await client.post("/api/client/events", json=signup, headers=keyed)
    assert replay.status_code == 204 and replay.headers["idempotent-replayed"] == "true"
    identify = {"external_id": "u_1", "email": "one@example.com", "data": {"plan": "pro"}}
    assert (
        await client.post("/api/client/identify", json=identify, headers=bearer(project.pk))
    ).status_code == 204
    # The synchronous batch waits for its own positions to be processed.
    batch = await client.post(
        "/api/client/users/batch", json=[{"external_id": "u_9"}], headers=bearer(project.sk)
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["succeeded"] == 1
    await drain(services)
    assert services.log.pending() == 0

    async def events_of(external_id: str) -> list[str]:
        response = await client.get(
            f"/api/client/users/{external_id}/events", headers=bearer(project.sk)
        )
        assert response.status_code == 200, response.text
        return sorted(e["name"] for e in response.json()["results"])

    assert await events_of("u_0") == ["Order placed"] * 4 + ["Signed up"]
    assert await events_of("u_1") == ["Order placed"] * 4
    assert await events_of("u_2") == ["Order placed"] * 4
    user = await client.get("/api/client/users/u_1", headers=bearer(project.sk))
    assert user.json()["email"] == "one@example.com" and user.json()["data"] == {"plan": "pro"}
    # The server dropped the retried copies (Nats-Msg-Id); the replay appended nothing.
    assert services.log.last_seq() == 12 + 1 + 1 + 1


async def test_more_entries_than_one_batch_are_all_processed_and_trimmed(
    tmp_path: Path, nats_url: str
) -> None:
    name, prefix = _unique()
    url = f"{nats_url}?stream={name}&prefix={prefix}"
    services = make_services(make_settings(tmp_path, log_url=url, worker_batch_size=50))
    services.start()
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = [{"name": "Viewed", "external_id": "u_1"} for _ in range(60)]
            for _ in range(2):  # 120 entries of one partition: more than two batches
                sent = await client.post(
                    "/api/client/events", json=body, headers=bearer(project.pk)
                )
                assert sent.status_code == 204, sent.text
            await drain(services, timeout=3)
        log = services.log
        assert isinstance(log, NatsLog)
        deadline = time.monotonic() + 5  # the consumer trims every 2 s
        while log.read_all(0, 10) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert log.read_all(0, 10) == []
    finally:
        services.stop()
        _delete_stream(nats_url, name)


def _age_keys(services: Services, seconds: float) -> None:
    """Move every idempotency record ``seconds`` into the past (past its in-flight window)."""
    with services.db.writer.begin() as conn:
        conn.execute(
            sa.update(idempotency_keys).values(
                created_at=idempotency_keys.c.created_at - int(seconds * 1_000_000)
            )
        )


async def test_a_request_that_dies_before_publishing_is_not_answered_204_by_its_retry(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies after claiming the key and before the entries reach the stream
    (here: publishing fails and the claim is not released, as after a SIGKILL). A retry
    must not replay 204 for events that were never appended: it hears 409 while the first
    request could still be running, then appends them itself."""
    log = services.log
    assert isinstance(log, NatsLog)

    def dies(*_: Any) -> Any:
        raise LogUnavailable("the process died here")

    keyed = bearer(project.pk, **{"Idempotency-Key": "order-7"})
    body = [{"name": "Order placed", "external_id": "u_7"}]
    with monkeypatch.context() as patch:
        patch.setattr(log, "_publish", dies)
        patch.setattr(log, "_release", lambda _claimed: None)
        first = await client.post("/api/client/events", json=body, headers=keyed)
    assert first.status_code == 503
    assert services.idempotency.get(project.id, "order-7") is not None  # the claim stayed
    early = await client.post("/api/client/events", json=body, headers=keyed)
    assert early.status_code == 409 and early.json()["code"] == "idempotency_in_progress"
    _age_keys(services, services.settings.sync_timeout + 10)
    retry = await client.post("/api/client/events", json=body, headers=keyed)
    assert retry.status_code == 204, retry.text
    assert "idempotent-replayed" not in retry.headers
    replay = await client.post("/api/client/events", json=body, headers=keyed)
    assert replay.status_code == 204 and replay.headers["idempotent-replayed"] == "true"
    await drain(services)
    events = await client.get("/api/client/users/u_7/events", headers=bearer(project.sk))
    assert [e["name"] for e in events.json()["results"]] == ["Order placed"]


async def test_a_request_that_dies_before_storing_its_answer_is_appended_once(
    client: httpx.AsyncClient,
    services: Services,
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The entries reached the stream but the answer was never stored (the process died
    in between): the retry appends again, and the stream drops the copies (message ids
    derived from the key, for profile updates as for events)."""
    log = services.log
    assert isinstance(log, NatsLog)
    keyed = bearer(project.pk, **{"Idempotency-Key": "identify-3"})
    body = {"external_id": "u_3", "email": "three@example.com"}
    with monkeypatch.context() as patch:
        patch.setattr(log, "_answer", lambda _records: None)
        first = await client.post("/api/client/identify", json=body, headers=keyed)
    assert first.status_code == 204
    appended = log.last_seq()
    record = services.idempotency.get(project.id, "identify-3")
    assert record is not None and record.status is None  # in flight: no answer stored
    _age_keys(services, services.settings.sync_timeout + 10)
    retry = await client.post("/api/client/identify", json=body, headers=keyed)
    assert retry.status_code == 204, retry.text
    assert log.last_seq() == appended  # the server dropped the second copy
    stored = services.idempotency.get(project.id, "identify-3")
    assert stored is not None and stored.status == 204
    await drain(services)
    user = await client.get("/api/client/users/u_3", headers=bearer(project.sk))
    assert user.json()["email"] == "three@example.com"


async def test_erasing_and_listing_a_user_wait_for_what_the_stream_accepted_before(
    tmp_path: Path, nats_url: str
) -> None:
    """An erasure or a list change right after a user's first write finds that user: it waits
    for the entries the stream already holds (its heads come from the stream, not from the
    database's log table, which is empty with JetStream)."""
    name, prefix = _unique()
    url = f"{nats_url}?stream={name}&prefix={prefix}"
    services = make_services(make_settings(tmp_path, log_url=url))
    services.start()
    consumer = services.consumer
    assert consumer is not None
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post(
                "/api/client/lists",
                json={"name": "VIPs", "type": "static"},
                headers=bearer(project.sk),
            )
            assert created.status_code == 201, created.text
            consumer.stop()  # what is accepted now stays in the stream for a while
            for external_id in ("gone", "joined"):
                sent = await client.post(
                    "/api/client/identify",
                    json={"external_id": external_id},
                    headers=bearer(project.pk),
                )
                assert sent.status_code == 204, sent.text
            erase = asyncio.create_task(
                client.delete("/api/client/users/gone", headers=bearer(project.sk))
            )
            add = asyncio.create_task(
                client.post(
                    f"/api/client/lists/{created.json()['id']}/users",
                    json={"external_ids": ["joined"]},
                    headers=bearer(project.sk),
                )
            )
            await asyncio.sleep(0.5)
            assert not erase.done() and not add.done()  # waiting, not "no such user"
            consumer.start()
            erased, added = await asyncio.wait_for(asyncio.gather(erase, add), 20)
            assert erased.status_code == 204, erased.text
            assert added.status_code == 200, added.text
            assert added.json()["added"] == 1 and added.json()["not_found"] == 0
            await drain(services)
            gone = await client.get("/api/client/users/gone", headers=bearer(project.sk))
            assert gone.status_code == 404
    finally:
        services.stop()
        _delete_stream(nats_url, name)
