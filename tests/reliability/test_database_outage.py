"""PostgreSQL unavailable for a while: 503 with Retry-After, then recovery by itself.

The machine's PostgreSQL is shared, so it is never stopped: Tidings reaches a database of
this module's own through a loopback relay (``tcp_relay.TcpRelay``) that the tests cut
(every connection reset, new ones refused: a stopped server) or blackhole (connections
accepted and kept, nothing answered: a frozen or blocked server), then restore.

Each outage test checks: every answer during the outage is ``503 service_unavailable``
in the problem envelope with ``Retry-After`` (never a 500) and comes within
``MAX_TO_503`` seconds; after the restore the same requests are accepted without
restarting anything; and every event acknowledged before or after the outage is stored
exactly once once the worker has drained the log. With the ingest log on JetStream,
known keys keep being accepted during the outage. See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from tests.api.test_validation import assert_problem
from tests.conftest import (
    _admin_engine,
    bearer,
    create_project,
    drain,
    empty_postgres,
    make_services,
    make_settings,
    postgres_url_or_skip,
)
from tests.e2e.server import Server
from tests.log.test_nats_log import _delete_stream, _unique, nats_url  # noqa: F401 (fixture)
from tests.reliability.tcp_relay import TcpRelay, refused
from tidings.api.app import create_app
from tidings.api.auth import KeyCache
from tidings.bootstrap import Services
from tidings.domain.auth import Scope, hash_key
from tidings.domain.errors import NotFound, ServiceUnavailable
from tidings.store import migrate
from tidings.store.database import open_database

MAX_TO_503 = 10.0  # seconds: the longest a request may wait for its 503 during an outage
MAX_TO_RECOVER = 10.0  # seconds after the restore until requests are accepted again
HANG = 20.0  # seconds: a request still unanswered by then hangs (the test fails, cleanly)

pytestmark = pytest.mark.timeout(90)


# -- a database of our own, reached through the relay --------------------------------------


@pytest.fixture(scope="module")
def outage_database() -> Iterator[str]:
    """A migrated database of this module's own (direct URL), dropped afterwards."""
    base = postgres_url_or_skip()
    url = sa.engine.make_url(base)
    if url.host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the outage relay is loopback-only; TIDINGS_TEST_POSTGRES_URL is not")
    name = f"tidings_outage_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    direct = url.set(database=name).render_as_string(hide_password=False)
    try:
        db = open_database(direct)
        try:
            migrate.upgrade(db.writer)
        finally:
            db.dispose()
        yield direct
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def direct_url(outage_database: str) -> str:
    empty_postgres(outage_database)
    return outage_database


@pytest.fixture
def relay(direct_url: str) -> Iterator[TcpRelay]:
    url = sa.engine.make_url(direct_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield relay
    finally:
        relay.close()


def through(relay: TcpRelay, direct_url: str) -> str:
    """``direct_url`` with the relay's address instead of PostgreSQL's."""
    url = sa.engine.make_url(direct_url).set(host="127.0.0.1", port=relay.port)
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def running(relay: TcpRelay, services: Services) -> Iterator[Services]:
    services.start()
    try:
        yield services
    finally:
        relay.restore()  # a blackholed connection would hold the shutdown up
        services.stop()


def stored_events(direct_url: str) -> dict[str, int]:
    """message_id → how many rows, read directly (not through the relay)."""
    engine = _admin_engine(direct_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT message_id, count(*) FROM events GROUP BY 1")
            return {str(m): int(n) for m, n in rows}
    finally:
        engine.dispose()


def assert_each_stored_once(direct_url: str, acknowledged: list[str], answered: list[str]) -> None:
    """Every acknowledged event once; an event answered 503 at most once (a request may
    be refused after its commit reached the server); nothing else, nothing twice."""
    stored = stored_events(direct_url)
    assert {m for m in acknowledged if stored.get(m) != 1} == set()
    assert {m: n for m, n in stored.items() if n != 1} == {}
    assert set(stored) <= set(acknowledged) | set(answered)


class Sender:
    """Posts one-event requests with fresh message ids; keeps what each one was answered."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.key = key
        self.count = 0
        self.acknowledged: list[str] = []
        self.refused: list[str] = []
        self.statuses: list[int] = []

    async def post(self, **headers: str) -> tuple[httpx.Response, float]:
        self.count += 1
        message_id = f"m{self.count:04d}"
        started = time.monotonic()
        event = {"name": "Outage", "external_id": f"u{self.count % 3}", "message_id": message_id}
        response = await asyncio.wait_for(
            self.client.post(
                "/api/client/events", json=[event], headers=bearer(self.key, **headers)
            ),
            HANG,
        )
        self.statuses.append(response.status_code)
        (self.acknowledged if response.status_code == 204 else self.refused).append(message_id)
        return response, time.monotonic() - started

    async def accepted(self, n: int) -> None:
        for _ in range(n):
            response, _ = await self.post()
            assert response.status_code == 204, response.text

    async def until_accepted(self, limit: float) -> float:
        """Seconds until a request is accepted again (each failure must be a clean 503)."""
        started = time.monotonic()
        while True:
            response, _ = await self.post()
            if response.status_code == 204:
                return time.monotonic() - started
            assert_unavailable(response)
            assert time.monotonic() - started < limit, "not accepted again in time"
            await asyncio.sleep(0.2)


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    return body


def in_process(
    tmp_path: Path, database_url: str, **overrides: Any
) -> tuple[Services, httpx.AsyncClient]:
    # The production key lookup timeout: an outage must answer 503 within it.
    overrides.setdefault("key_lookup_timeout", 2.0)
    services = make_services(make_settings(tmp_path, database_url=database_url, **overrides))
    app = create_app(services, manage_lifecycle=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return services, client


def worker_failed(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        r.name == "tidings.pipeline.consumer" and "retrying" in r.getMessage()
        for r in caplog.records
    )


def fault(relay: TcpRelay, kind: str) -> None:
    if kind == "cut":
        relay.cut()
        assert refused(relay.port)
    else:
        relay.blackhole()


# -- 1, 2, 5: the database log, cut or blackholed ----------------------------------------


@pytest.mark.parametrize("kind", ["cut", "blackhole"])
async def test_the_api_answers_503_during_a_database_outage_and_recovers_by_itself(
    tmp_path: Path,
    direct_url: str,
    relay: TcpRelay,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # key_cache_ttl=0: every request reads its key (the slowest case during an outage).
    services, client = in_process(tmp_path, through(relay, direct_url), key_cache_ttl=0)
    with running(relay, services), caplog.at_level(logging.WARNING):
        project = create_project(services)
        async with client:
            send = Sender(client, project.pk)
            await send.accepted(10)
            await drain(services)
            user = await client.get("/api/client/users/u1", headers=bearer(project.sk))
            assert user.status_code == 200, user.text
            await send.accepted(10)  # the worker may still be applying these at the fault

            fault(relay, kind)
            # Everything at once: each must be a clean 503 within MAX_TO_503.
            outage: list[tuple[str, httpx.Response, float]] = []

            async def timed(what: str, call: Any) -> None:
                started = time.monotonic()
                response = await asyncio.wait_for(call, HANG)
                outage.append((what, response, time.monotonic() - started))

            async def event(**headers: str) -> None:
                response, seconds = await send.post(**headers)
                outage.append(("event", response, seconds))

            unknown = "pk_" + uuid.uuid4().hex
            await asyncio.gather(
                event(),
                event(),
                event(**{"Idempotency-Key": "outage-1"}),
                timed("read", client.get("/api/client/users/u1", headers=bearer(project.sk))),
                timed(
                    "unknown key",
                    client.post(
                        "/api/client/events",
                        json=[{"name": "E", "external_id": "u"}],
                        headers=bearer(unknown),
                    ),
                ),
                timed("health", client.get("/api/health")),
            )
            print("\n" + ", ".join(f"{w} {r.status_code} {t:.2f} s" for w, r, t in outage))
            for what, response, seconds in outage:
                assert_unavailable(response)
                assert seconds < MAX_TO_503, f"{what}: 503 after {seconds:.1f} s"
            # Requests go on failing cleanly while the database stays away, and fast.
            response, seconds = await send.post()
            assert_unavailable(response)
            assert seconds < MAX_TO_503
            slowest = max(s for _, _, s in outage)
            if kind == "cut":  # the worker's polls fail meanwhile; it retries with backoff
                deadline = time.monotonic() + 10
                while not worker_failed(caplog):
                    assert time.monotonic() < deadline, "the worker never tried the database"
                    await asyncio.sleep(0.1)

            relay.restore()
            recovered = await send.until_accepted(MAX_TO_RECOVER)
            await send.accepted(10)
            user = await client.get("/api/client/users/u1", headers=bearer(project.sk))
            assert user.status_code == 200, user.text
            await drain(services, timeout=30)

            assert 500 not in send.statuses
            assert_each_stored_once(direct_url, send.acknowledged, send.refused)
            assert len(send.acknowledged) == 31
    print(f"\n{kind}: slowest 503 {slowest:.2f} s, accepted again {recovered:.2f} s after restore")
    assert not any(
        r.levelno >= logging.ERROR and r.name == "tidings.api.middleware" for r in caplog.records
    ), "an unhandled error (500) was logged"


# -- 3: API keys during an outage --------------------------------------------------------


class FlakyKeys:
    """A ProjectStore stand-in: answers from a dict, fails or hangs when told to."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.down = False
        self.hang = threading.Event()  # cleared: find_key blocks until set
        self.hang.set()
        self.reads = 0

    def add(self, token: str) -> None:
        self.keys[hash_key(token)] = _api_key(len(self.keys) + 1)

    def find_key(self, key_hash: str) -> Any:
        self.reads += 1
        self.hang.wait(30)
        if self.down:
            raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))
        return self.keys.get(key_hash)

    def get_project(self, project_id: int) -> Any:
        if project_id != 1:
            raise NotFound("no project")
        return "project"


def _api_key(key_id: int) -> Any:
    """A stand-in key: KeyCache only carries it."""
    return type("Key", (), {"id": key_id, "project_id": 1})()


async def test_known_keys_keep_their_last_answer_while_lookups_fail_unknown_ones_get_503() -> None:
    store = FlakyKeys()
    cache = KeyCache(store, ttl=0, stale_for=1.0, lookup_timeout=0.3, retry_every=0.1)
    store.add("known")
    assert (await cache.lookup("known")) is not None
    assert (await cache.lookup("gone")) is None  # "no such key" is an answer too

    store.down = True  # lookups fail at once (a refused connection)
    assert (await cache.lookup("known")) is not None  # the last known answer
    assert (await cache.lookup("gone")) is None  # still no such key: 401, not 503
    with pytest.raises(ServiceUnavailable):
        await cache.lookup("never-seen")

    store.down = False
    store.hang.clear()  # lookups hang (a database that does not answer)
    await asyncio.sleep(0.15)  # past retry_every: the next request tries a read again
    started = time.monotonic()
    assert (await cache.lookup("known")) is not None  # after lookup_timeout, from memory
    assert 0.25 < time.monotonic() - started < 1.0
    reads = store.reads
    started = time.monotonic()
    for _ in range(20):  # while that read hangs: from memory at once, no second read
        assert (await cache.lookup("known")) is not None
    assert time.monotonic() - started < 0.2
    assert store.reads == reads
    with pytest.raises(ServiceUnavailable):  # a key never seen waits lookup_timeout: 503
        await cache.lookup("another")

    await asyncio.sleep(1.0)  # the last answer is now older than stale_for
    with pytest.raises(ServiceUnavailable):
        await cache.lookup("known")

    # Back: fresh answers again, revocation included.
    store.hang.set()
    await asyncio.sleep(0.05)
    del store.keys[hash_key("known")]
    assert (await cache.lookup("known")) is None


async def test_revocation_still_takes_effect_within_the_ttl_while_the_database_is_up(
    tmp_path: Path, direct_url: str, relay: TcpRelay
) -> None:
    services, client = in_process(
        tmp_path, through(relay, direct_url), key_cache_ttl=1.0, run_worker=False
    )
    with running(relay, services):
        project = create_project(services)
        async with client:
            known = services.projects.create_key(project.id, Scope.PUBLIC).key
            unknown = "pk_" + uuid.uuid4().hex
            await Sender(client, known).accepted(1)
            send = Sender(client, project.pk)
            await send.accepted(1)
            services.projects.revoke_key(key=project.pk)
            response, _ = await send.post()  # cached for up to the TTL
            assert response.status_code == 204
            await asyncio.sleep(1.1)
            response, _ = await send.post()
            assert_problem(response, 401, "authentication_required")

            # During an outage, the last known answer of a revoked key is still "revoked",
            # a known valid key passes (its 503 comes from the log, not from the key check),
            # and a key never seen cannot be checked: 503, not 401.
            relay.cut()
            await asyncio.sleep(1.1)
            response, _ = await send.post()
            assert_problem(response, 401, "authentication_required")
            response, _ = await Sender(client, known).post()
            assert "ingest log" in assert_unavailable(response)["message"]
            response, _ = await Sender(client, unknown).post()
            assert "API keys" in assert_unavailable(response)["message"]

            relay.restore()  # and once it is back, a fresh answer for every key
            response, _ = await Sender(client, known).post()
            assert response.status_code == 204, response.text
            services.projects.revoke_key(key=known)
            await asyncio.sleep(1.1)
            response, _ = await Sender(client, known).post()
            assert_problem(response, 401, "authentication_required")


# -- 4: the ingest log on JetStream keeps accepting -----------------------------------------


@pytest.fixture
def nats_log_url(nats_url: str) -> Iterator[str]:  # noqa: F811
    stream, prefix = _unique()
    try:
        yield f"{nats_url}?{urlencode({'stream': stream, 'prefix': prefix})}"
    finally:
        _delete_stream(nats_url, stream)


@pytest.mark.parametrize("kind", ["cut", "blackhole"])
async def test_with_jetstream_known_keys_are_accepted_during_a_database_outage(
    tmp_path: Path, direct_url: str, relay: TcpRelay, nats_log_url: str, kind: str
) -> None:
    services, client = in_process(
        tmp_path, through(relay, direct_url), key_cache_ttl=0, log_url=nats_log_url
    )
    with running(relay, services):
        project = create_project(services)
        async with client:
            send = Sender(client, project.pk)
            await send.accepted(5)

            fault(relay, kind)
            slowest = 0.0
            for _ in range(10):  # accepted into JetStream, not the database
                response, seconds = await send.post()
                assert response.status_code == 204, response.text
                slowest = max(slowest, seconds)
            assert slowest < MAX_TO_503
            # An Idempotency-Key needs the database (docs/jetstream.md): 503.
            response, seconds = await send.post(**{"Idempotency-Key": "k1"})
            assert_unavailable(response)
            assert seconds < MAX_TO_503

            relay.restore()
            await send.accepted(5)
            await drain(services, timeout=30)  # pending() needs the database: after restore
            assert_each_stored_once(direct_url, send.acknowledged, send.refused)
            assert len(send.acknowledged) == 20
            assert 500 not in send.statuses
    print(f"\n{kind}: slowest accepted request during the outage {slowest:.2f} s")


# -- a real server process ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cut", "blackhole"])
def test_a_server_process_answers_503_during_an_outage_and_recovers(
    tmp_path: Path, direct_url: str, relay: TcpRelay, kind: str
) -> None:
    services = make_services(make_settings(tmp_path, database_url=direct_url))
    try:
        project = create_project(services)
    finally:
        services.close()
    # `tidings serve` (API and worker) on the relay; keys are read on every request.
    server = Server(through(relay, direct_url), command="serve", TIDINGS_KEY_CACHE_TTL="0")
    server.start()
    statuses: list[int] = []
    acknowledged: list[str] = []
    refused_ids: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=HANG) as http:

            def post(n: int) -> tuple[httpx.Response, float]:
                started = time.monotonic()
                message_id = f"p{n:04d}"
                response = http.post(
                    "/api/client/events",
                    json=[{"name": "Outage", "external_id": "u1", "message_id": message_id}],
                    headers=bearer(project.pk),
                )
                statuses.append(response.status_code)
                (acknowledged if response.status_code == 204 else refused_ids).append(message_id)
                return response, time.monotonic() - started

            for n in range(5):
                assert post(n)[0].status_code == 204
            server.wait_drained()  # 60 s: a loaded machine starts the worker child slowly
            assert http.get("/api/client/users/u1", headers=bearer(project.sk)).status_code == 200

            fault(relay, kind)
            response, seconds = post(100)
            assert_unavailable(response)
            assert seconds < MAX_TO_503, f"503 after {seconds:.1f} s"
            started = time.monotonic()
            read = http.get("/api/client/users/u1", headers=bearer(project.sk))
            assert_unavailable(read)
            assert time.monotonic() - started < MAX_TO_503
            assert http.get("/api/health").status_code == 503

            relay.restore()
            started = time.monotonic()
            n = 200
            while (response := post(n)[0]).status_code != 204:
                assert_unavailable(response)
                assert time.monotonic() - started < MAX_TO_RECOVER
                n += 1
                time.sleep(0.2)
            recovered = time.monotonic() - started
            for n in range(300, 305):
                assert post(n)[0].status_code == 204
            server.wait_drained(30)
    finally:
        output = server.stop()
    assert 500 not in statuses, output
    assert "unhandled error" not in output, output
    assert_each_stored_once(direct_url, acknowledged, refused_ids)
    assert len(acknowledged) == 11
    print(f"\nserver, {kind}: 503 after {seconds:.2f} s, accepted again {recovered:.2f} s later")
