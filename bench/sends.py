"""Sends benchmark: a blast to N recipients, delivered by a `tidings worker` process.

    .venv/bin/python bench/sends.py [--recipients N] [--database-url URL] [--json PATH]
                                    [--queries-sample M]

1. Setup (not timed): a fresh database (a SQLite file in a temp directory, or the
   PostgreSQL database given, which must be empty and migrated by this script) gets N
   profiles with an email, one static list holding them all, a ``logger`` provider (it
   takes each message and answers at once: this measures Tidings, not a network), a
   blast campaign with a Liquid email template (subject and HTML with user fields).
2. A `tidings worker` process is started (the production entry point: it also applies
   the ingest log, so the ``email_sent`` events the sends record are processed too), and
   the campaign is scheduled (``state: scheduled``, ``send_at``: now). Timed from then
   until the campaign is ``finished``. Reported: end-to-end seconds, sends/s end to end
   and over the delivery phase alone (first to last ``sent_at``), the worker's peak
   resident memory (sampled every 50 ms, with psutil), and whether every recipient was
   sent exactly once.
3. Queries per send: the same blast, smaller (``--queries-sample``), delivered in this
   process with a counter on every SQL statement the delivery issues (and its sends/s:
   delivery alone, without the worker's event processing beside it).

Targets (printed with the ratio; a miss never fails the script): >= 2,000 sends/s per
worker, peak worker memory < 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from tidings.bootstrap import build, ensure_schema
from tidings.messaging.delivery import Delivery, DeliveryConfig
from tidings.settings import Settings
from tidings.store.tables import identities, list_members, lists, profiles
from tidings.store.tables_messaging import campaigns, sends

TARGET_RATE = 2000.0
MEMORY_CEILING_MB = 300.0

TEMPLATE = {
    "from": {"name": "Shop", "address": "shop@example.com"},
    "subject": "Hello {{ user.first_name | default: 'there' }}, news for {{ project.name }}",
    "html": "<html><body><h1>Hi {{ user.first_name }}</h1><p>Your code: {{ user.data.code }}"
    "</p><p><a href='https://shop.test/?u={{ user.external_id }}'>Shop</a></p></body></html>",
}


def _now() -> int:
    return time.time_ns() // 1000


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(database_url=url, demo_project=False, key_cache_ttl=0, **extra)  # type: ignore[arg-type]


def setup(url: str, recipients: int) -> tuple[int, int]:
    """A project, N profiles on one static list, a logger provider, a blast campaign
    with its template (a draft). The campaign id and the project id."""
    services = build(_settings(url, run_worker=False))
    ensure_schema(services.db, auto_migrate=True)
    assert services.messaging is not None
    try:
        project = services.projects.create_project("Bench", locale="en", timezone="UTC")
        now = _now()
        with services.db.writer.begin() as conn:
            list_id = conn.execute(
                sa.insert(lists).returning(lists.c.id),
                {
                    "project_id": project.id,
                    "name": "Everyone",
                    "type": "static",
                    "state": "ready",
                    "version": 1,
                    "users_count": recipients,
                    "tags": [],
                    "created_at": now,
                    "updated_at": now,
                },
            ).scalar_one()
        chunk = 5000
        for start in range(0, recipients, chunk):
            ids = range(start, min(recipients, start + chunk))
            with services.db.writer.begin() as conn:
                conn.execute(
                    sa.insert(profiles),
                    [
                        {
                            "id": f"p{i:012d}",
                            "project_id": project.id,
                            "external_id": f"u{i}",
                            "email": f"u{i}@example.com",
                            "data": {"first_name": f"Name{i}", "code": i},
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in ids
                    ],
                )
                conn.execute(
                    sa.insert(identities),
                    [
                        {
                            "project_id": project.id,
                            "kind": "external",
                            "value": f"u{i}",
                            "profile_id": f"p{i:012d}",
                            "created_at": now,
                        }
                        for i in ids
                    ],
                )
                conn.execute(
                    sa.insert(list_members),
                    [
                        {
                            "list_id": list_id,
                            "profile_id": f"p{i:012d}",
                            "version": 1,
                            "added_at": now,
                        }
                        for i in ids
                    ],
                )
        store = services.messaging.campaigns
        store.create_provider(
            project.id,
            {
                "type": "logger",
                "name": "sink",
                "channel": "email",
                "is_default": True,
                "rate_limit": 0,
                "rate_interval": "second",
                "data": {},
            },
        )
        subscription = services.messaging.subscriptions.default_for(project.id, "email")
        campaign = store.create_campaign(
            project.id,
            {
                "type": "blast",
                "name": "Bench",
                "channel": "email",
                "subscription_id": subscription.id,
                "list_ids": [list_id],
            },
        )
        store.create_template(project.id, campaign["id"], "en", TEMPLATE)
        return int(campaign["id"]), project.id
    finally:
        services.close()


def schedule(url: str, project_id: int, campaign_id: int) -> None:
    services = build(_settings(url, run_worker=False))
    assert services.messaging is not None
    try:
        services.messaging.campaigns.update_campaign(
            project_id, campaign_id, {"state": "scheduled", "send_at": _now()}
        )
    finally:
        services.close()


def run_worker_blast(
    url: str, project_id: int, campaign_id: int, recipients: int
) -> dict[str, Any]:
    env = {**os.environ, "TIDINGS_DATABASE_URL": url, "TIDINGS_DEMO_PROJECT": "false"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tidings", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    peak = 0
    try:
        process = psutil.Process(worker.pid)
        time.sleep(1.0)  # let it start and go idle
        started = time.monotonic()
        schedule(url, project_id, campaign_id)
        state = "scheduled"
        last_check = 0.0
        while state != "finished":
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            try:
                rss = process.memory_info().rss
                peak = max(peak, rss)
            except psutil.NoSuchProcess:
                break
            if time.monotonic() - last_check > 0.25:
                last_check = time.monotonic()
                with engine.connect() as conn:
                    state = conn.execute(
                        sa.select(campaigns.c.state).where(campaigns.c.id == campaign_id)
                    ).scalar_one()
            if time.monotonic() - started > 3600:
                raise RuntimeError("the blast did not finish within an hour")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    sa.select(sends.c.state, sa.func.count())
                    .where(sends.c.campaign_id == campaign_id)
                    .group_by(sends.c.state)
                ).all()
            )
            first, last = conn.execute(
                sa.select(sa.func.min(sends.c.sent_at), sa.func.max(sends.c.sent_at)).where(
                    sends.c.campaign_id == campaign_id
                )
            ).one()
    finally:
        worker.terminate()
        worker.wait(30)
        engine.dispose()
    delivery_seconds = max((last - first) / 1e6, 1e-6)
    return {
        "recipients": recipients,
        "sent": counts.get("sent", 0),
        "other_states": {k: v for k, v in counts.items() if k != "sent"},
        "scheduled_to_finished_s": round(elapsed, 2),
        "sends_per_s_end_to_end": round(recipients / elapsed, 1),
        "sends_per_s_delivery_phase": round(counts.get("sent", 0) / delivery_seconds, 1),
        "peak_worker_rss_mb": round(peak / 2**20, 1),
    }


def count_queries(url: str, recipients: int) -> dict[str, Any]:
    """Deliver a blast in this process, counting the SQL statements delivery issues."""
    campaign_id, project_id = setup(url, recipients)
    schedule(url, project_id, campaign_id)
    services = build(_settings(url, run_worker=False))
    assert services.messaging is not None
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    engines = {
        services.db.writer.engine if hasattr(services.db.writer, "engine") else services.db.writer,
        services.db.reader,
    }
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", count)
    delivery = Delivery(
        services.db.writer,
        services.db.reader,
        services.messaging.outbox,
        config=DeliveryConfig(),
    )

    async def run() -> None:
        while True:
            more = delivery.tick()
            done = await delivery.run_once()
            if not done and not more:
                with services.db.reader.connect() as conn:
                    state = conn.execute(
                        sa.select(campaigns.c.state).where(campaigns.c.id == campaign_id)
                    ).scalar_one()
                if state == "finished":
                    break
        await delivery.aclose()

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    services.close()
    return {
        "recipients": recipients,
        "statements": statements[0],
        "queries_per_send": round(statements[0] / recipients, 4),
        "delivery_only_sends_per_s": round(recipients / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--queries-sample", type=int, default=10_000)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="tidings-bench-sends-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        t0 = time.monotonic()
        campaign_id, project_id = setup(url, args.recipients)
        print(f"setup: {args.recipients} recipients in {time.monotonic() - t0:.1f} s", flush=True)
        blast = run_worker_blast(url, project_id, campaign_id, args.recipients)
        queries = None
        if args.queries_sample and not args.database_url:
            queries = count_queries(f"sqlite:///{tmp}/queries.db", args.queries_sample)
    result = {
        "machine": f"{platform.node()} {platform.machine()} {psutil.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "backend": "postgresql" if args.database_url else "sqlite",
        "blast": blast,
        "queries": queries,
        "targets": {
            "sends_per_s": TARGET_RATE,
            "ratio_delivery_phase": round(blast["sends_per_s_delivery_phase"] / TARGET_RATE, 2),
            "ratio_end_to_end": round(blast["sends_per_s_end_to_end"] / TARGET_RATE, 2),
            "memory_ceiling_mb": MEMORY_CEILING_MB,
            "memory_ratio": round(blast["peak_worker_rss_mb"] / MEMORY_CEILING_MB, 2),
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
