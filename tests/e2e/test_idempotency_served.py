"""Idempotency across processes: a real ``tidings serve`` over every database × ingest
log pairing (SQLite, PostgreSQL × the database's log, JetStream), spoken to over HTTP.

In process: tests/api/test_idempotency_logs.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.server import Server, create_project
from tests.log.test_nats_log import _delete_stream, _unique, nats_url  # noqa: F401 (fixture)
from tidings.log.database import log_file_path
from tidings.store.database import open_database
from tidings.store.tables import events, idempotency_keys

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidings.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["db", "jetstream"])
def log_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "db":
        yield "db"
        return
    nats = str(request.getfixturevalue("nats_url"))
    stream, prefix = _unique()
    yield f"{nats}?stream={stream}&prefix={prefix}"
    _delete_stream(nats, stream)


def _stores(database: str, log_url: str) -> list[str]:
    """The databases holding ingest requests' idempotency records."""
    if database.startswith("sqlite") and log_url == "db":
        return [f"sqlite:///{log_file_path(database.removeprefix('sqlite:///'))}"]
    return [database]


def _has_record(database: str, log_url: str, key: str) -> bool:
    for url in _stores(database, log_url):
        db = open_database(url)
        try:
            with db.reader.connect() as conn:
                found = conn.execute(
                    sa.select(idempotency_keys.c.key).where(idempotency_keys.c.key == key)
                ).first()
        except sa.exc.OperationalError:  # the log file is not there yet
            found = None
        finally:
            db.dispose()
        if found is not None:
            return True
    return False


def _count_events(database: str) -> int:
    db = open_database(database)
    try:
        with db.reader.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())
    finally:
        db.dispose()


def _post(url: str, path: str, key: str, body: object, api_key: str) -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
        timeout=60,
    )


def test_replay_mismatch_and_batches_in_a_served_process(database: str, log_url: str) -> None:
    keys = create_project(database)
    server = Server(database, TIDINGS_LOG_URL=log_url).start()
    try:
        body = [
            {"name": "Order placed", "external_id": "u_1"},
            {"name": "Paid", "external_id": "u_1"},
        ]
        first = _post(server.url, "/api/client/events", "fresh", body, keys["public_key"])
        assert first.status_code == 204, first.text
        assert "idempotent-replayed" not in first.headers
        again = _post(server.url, "/api/client/events", "fresh", body, keys["public_key"])
        assert again.status_code == 204, again.text
        assert again.headers["idempotent-replayed"] == "true"

        other = [{"name": "Refunded", "external_id": "u_1"}]
        mismatch = _post(server.url, "/api/client/events", "fresh", other, keys["public_key"])
        assert mismatch.status_code == 409, mismatch.text
        assert mismatch.json()["code"] == "idempotency_key_mismatch"

        users = [
            {"external_id": "u_2", "data": {"plan": "pro"}},
            {"external_id": "u_3", "email": "x"},
        ]
        batch = _post(server.url, "/api/client/users/batch", "batch", users, keys["secret_key"])
        assert batch.status_code == 200, batch.text
        assert (batch.json()["succeeded"], batch.json()["failed"]) == (1, 1)
        replay = _post(server.url, "/api/client/users/batch", "batch", users, keys["secret_key"])
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == batch.content

        server.wait_drained()
        assert _count_events(database) == 2
    finally:
        output = server.stop()
    assert "Traceback" not in output, output


def test_in_progress_while_a_served_request_waits(database: str, log_url: str) -> None:
    """No worker: the first synchronous batch waits; the same key meanwhile is 409."""
    keys = create_project(database)
    server = Server(
        database, TIDINGS_LOG_URL=log_url, TIDINGS_RUN_WORKER="false", TIDINGS_SYNC_TIMEOUT="4"
    ).start()
    try:
        users = [{"external_id": "u_w"}]
        answers: list[httpx.Response] = []
        first = threading.Thread(
            target=lambda: answers.append(
                _post(server.url, "/api/client/users/batch", "wait", users, keys["secret_key"])
            )
        )
        first.start()
        deadline = time.monotonic() + 30
        while not _has_record(database, log_url, "wait"):
            assert time.monotonic() < deadline, "the first request never claimed its key"
            time.sleep(0.02)
        second = _post(server.url, "/api/client/users/batch", "wait", users, keys["secret_key"])
        assert second.status_code == 409, second.text
        assert second.json()["code"] == "idempotency_in_progress"
        first.join(60)
        assert answers[0].status_code == 503, answers[0].text
        assert answers[0].json()["code"] == "service_unavailable"
    finally:
        output = server.stop()
    assert "Traceback" not in output, output
