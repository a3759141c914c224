"""The database refuses writes: a clear 503, nothing half-written, no corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.api.test_validation import assert_problem
from tests.conftest import bearer, create_project, make_services, make_settings
from tidings.api.app import create_app


async def test_a_read_only_database_answers_503_and_stays_intact(tmp_path: Path) -> None:
    writable = make_services(make_settings(tmp_path))
    project = create_project(writable)
    writable.db.dispose()
    database = tmp_path / "tidings.db"
    log_file = tmp_path / "tidings-log.db"  # the ingest log's own file
    before = database.read_bytes(), log_file.read_bytes()

    # The same file opened read-only, as after a permissions mistake or a read-only mount.
    read_only = make_services(
        make_settings(
            tmp_path, database_url=f"sqlite:///file:{database}?mode=ro&uri=true", run_worker=False
        )
    )
    read_only.start()
    try:
        transport = httpx.ASGITransport(app=create_app(read_only, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/api/client/events",
                json=[{"name": "E", "external_id": "u"}],
                headers=bearer(project.pk),
            )
            body = assert_problem(response, 503, "service_unavailable")
            assert int(response.headers["retry-after"]) >= 1
            assert "retry" in body["message"].lower()
            # Reads still work.
            health = await client.get("/api/health")
            assert health.status_code == 200 and health.json()["log_lag"] == 0
    finally:
        read_only.stop()

    for path in (database, log_file):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT count(*) FROM ingest_log").fetchone() == (0,)
    assert (database.read_bytes(), log_file.read_bytes()) == before
