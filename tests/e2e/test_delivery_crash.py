"""SIGKILL a `tidings worker` in the middle of a blast, start it again: every recipient
gets at most one message, and whoever got none is recorded as ``interrupted`` (the
documented at-most-once rule, docs/messaging.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import bearer, create_project, make_services, make_settings
from tests.messaging.helpers import API, EMAIL_TEMPLATE
from tidings.api.app import create_app
from tidings.store.tables_messaging import campaigns, sends

pytestmark = pytest.mark.slow

RECIPIENTS = 3000
BATCH = 50


def _worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TIDINGS_DATABASE_URL": url,
        "TIDINGS_DELIVERY_LEASE": "2",
        "TIDINGS_DELIVERY_BATCH_SIZE": str(BATCH),
        "TIDINGS_WORKER_NICE": "0",
        "TIDINGS_DEMO_PROJECT": "false",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tidings", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _lines(sink: Path) -> list[dict[str, object]]:
    if not sink.exists():
        return []
    # The last line may be half written while a worker sends: only whole lines count.
    whole = sink.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


async def _setup(tmp_path: Path, url: str, sink: Path) -> int:
    services = make_services(make_settings(tmp_path, database_url=url))
    services.start()
    assert services.messaging is not None and services.messaging.worker is not None
    services.messaging.worker.stop()  # the blast is for the worker process
    try:
        project = create_project(services)
        app = create_app(services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def post(path: str, body: object) -> dict[str, object]:
                response = await client.post(API + path, json=body, headers=bearer(project.sk))
                assert response.status_code in (200, 201), response.text
                result: dict[str, object] = response.json()
                return result

            for start in range(0, RECIPIENTS, 100):
                items = [
                    {"external_id": f"u{i}", "email": f"u{i}@example.com"}
                    for i in range(start, start + 100)
                ]
                await post("/users/batch", items)
            listed = await post("/lists", {"name": "All", "type": "static"})
            for start in range(0, RECIPIENTS, 1000):
                ids = [f"u{i}" for i in range(start, start + 1000)]
                await post(f"/lists/{listed['id']}/users", {"external_ids": ids})
            await post(
                "/providers",
                {
                    "type": "logger",
                    "name": "sink",
                    "group": "email",
                    "data": {"path": str(sink), "delay": 0.05},
                },
            )
            campaign = await post(
                "/campaigns",
                {"type": "blast", "name": "B", "channel": "email", "list_ids": [listed["id"]]},
            )
            await post(
                "/templates",
                {"campaign_id": campaign["id"], "locale": "en", "data": EMAIL_TEMPLATE},
            )
            response = await client.patch(
                f"{API}/campaigns/{campaign['id']}",
                json={"state": "scheduled", "send_at": "2020-01-01T00:00:00Z"},
                headers=bearer(project.sk),
            )
            assert response.status_code == 200, response.text
        return int(str(campaign["id"]))
    finally:
        services.stop()


async def test_sigkill_mid_blast_sends_nobody_twice(tmp_path: Path) -> None:
    await _kill_mid_blast(tmp_path, f"sqlite:///{tmp_path / 'tidings.db'}", workers=1)


async def test_sigkill_one_of_two_workers_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Two workers share the outbox (SKIP LOCKED); one is killed mid-blast, the other
    goes on, and a restarted one joins it."""
    await _kill_mid_blast(tmp_path, pg_url, workers=2)


async def _kill_mid_blast(tmp_path: Path, url: str, *, workers: int) -> None:
    sink = tmp_path / "sink.jsonl"
    log = tmp_path / "worker.log"
    campaign_id = await _setup(tmp_path, url, sink)

    running = [_worker(url, log) for _ in range(workers)]
    try:
        deadline = time.monotonic() + 120
        while len(_lines(sink)) < RECIPIENTS // 5 and time.monotonic() < deadline:
            assert all(w.poll() is None for w in running), log.read_text()[-3000:]
            time.sleep(0.005)
        victim = running.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        at_kill = len(_lines(sink))
        assert RECIPIENTS // 5 <= at_kill < RECIPIENTS, "the kill should come mid-blast"

        running.append(_worker(url, log))
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        state = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                state = conn.execute(
                    sa.select(campaigns.c.state).where(campaigns.c.id == campaign_id)
                ).scalar_one()
            if state == "finished":
                break
            assert all(w.poll() is None for w in running), log.read_text()[-3000:]
            time.sleep(0.2)
        assert state == "finished", log.read_text()[-3000:]
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(sends.c.profile_id, sends.c.state, sends.c.reason).where(
                    sends.c.campaign_id == campaign_id
                )
            ).all()
            emails = dict(conn.execute(sa.text("SELECT id, email FROM profiles")).all())
        engine.dispose()
    finally:
        for w in running:
            if w.poll() is None:
                w.terminate()
                w.wait(15)

    received = Counter(str(line["to"]) for line in _lines(sink))
    assert len(rows) == RECIPIENTS
    assert max(received.values()) == 1, "a recipient got two messages"
    by_state = Counter(r.state for r in rows)
    interrupted = [r for r in rows if r.state == "failed"]
    assert set(by_state) <= {"sent", "failed"}
    assert all(r.reason.startswith("interrupted") for r in interrupted)
    assert len(interrupted) <= BATCH  # at most the batch in flight at the kill
    for row in rows:
        if row.state == "sent":  # recorded sent: delivered exactly once
            assert received.get(emails[row.profile_id], 0) == 1
        # interrupted: delivered once or not at all; never again
    assert sum(received.values()) >= RECIPIENTS - len(interrupted)
