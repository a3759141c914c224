"""Sends benchmark: a blast to N recipients, delivered by a `tidings worker` process
into a local sink.

    .venv/bin/python bench/sends.py [--sink http|smtp|logger] [--recipients N]
                                    [--database-url URL] [--json PATH] [--queries-sample M]

Sinks (``--sink``, default ``http``), each in a process of its own on 127.0.0.1:

- ``http``: a text (SMS) blast through the ``http_sms`` provider into a small aiohttp
  server answering ``200 {"id": …}`` to every ``POST`` (keep-alive);
- ``smtp``: an email blast through the ``smtp`` provider (``--smtp-connections``
  connections) into an aiosmtpd server;
- ``logger``: an email blast through the ``logger`` provider (no network at all).

1. Setup (not timed): a fresh database (a SQLite file in a temp directory, or the
   PostgreSQL database given, which must be empty and migrated by this script) gets N
   profiles with an email and a phone, one static list holding them all, the provider,
   and a blast campaign with a Liquid template (user fields in the subject and HTML, or
   in the SMS text).
2. A `tidings worker` process is started (the production entry point: it also applies
   the ingest log, so the ``*_sent`` events the sends record are processed too), and the
   campaign is scheduled (``state: scheduled``, ``send_at``: now). Timed from then until
   the campaign is ``finished``. Reported: end-to-end seconds, sends/s end to end and
   over the delivery phase alone (first to last ``sent_at``), the worker's CPU time per
   send (the figure least disturbed by other processes on the machine, and the sends/s
   one worker would reach with a core of its own), its peak resident memory (sampled
   every 50 ms, with psutil), and what the sink received (every recipient exactly once).
3. Queries per send: the same blast, smaller (``--queries-sample``), delivered in this
   process into the same sink with a counter on every SQL statement the delivery issues
   (and its sends/s and CPU per send: delivery alone, without the worker's event
   processing beside it).

Targets (printed with the ratio; a miss never fails the script): >= 2,000 sends/s per
worker into the HTTP sink, peak worker memory < 300 MB, no per-recipient query storm.
The load average is printed at the start and the end: on a shared machine the wall-clock
rates fall with it, the CPU per send much less.
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

from _sinks import Sinks
from tidings.bootstrap import build, ensure_schema
from tidings.messaging.delivery import Delivery, DeliveryConfig
from tidings.settings import Settings
from tidings.store.tables import identities, list_members, lists, profiles
from tidings.store.tables_messaging import campaigns, sends

TARGET_RATE = 2000.0
MEMORY_CEILING_MB = 300.0

EMAIL_TEMPLATE = {
    "from": {"name": "Shop", "address": "shop@example.com"},
    "subject": "Hello {{ user.first_name | default: 'there' }}, news for {{ project.name }}",
    "html": "<html><body><h1>Hi {{ user.first_name }}</h1><p>Your code: {{ user.data.code }}"
    "</p><p><a href='https://shop.test/?u={{ user.external_id }}'>Shop</a></p></body></html>",
}
TEXT_TEMPLATE = {
    "text": "Hi {{ user.first_name | default: 'there' }}, your code is {{ user.data.code }}: "
    "https://shop.test/?u={{ user.external_id }}",
}


def provider_for(
    sink: str, sinks: Sinks | None, smtp_connections: int
) -> tuple[str, str, dict[str, Any]]:
    """(channel, provider type, provider data) of a sink."""
    if sink == "http":
        assert sinks is not None
        return (
            "text",
            "http_sms",
            {"url": f"http://127.0.0.1:{sinks.http_port}/sms", "api_key": "k"},
        )
    if sink == "smtp":
        assert sinks is not None
        return (
            "email",
            "smtp",
            {
                "host": "127.0.0.1",
                "port": sinks.smtp_port,
                "tls": "none",
                "pool_size": smtp_connections,
            },
        )
    return "email", "logger", {}


# -- setup ----------------------------------------------------------------------------------------


def _now() -> int:
    return time.time_ns() // 1000


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(database_url=url, demo_project=False, key_cache_ttl=0, **extra)  # type: ignore[arg-type]


def setup(
    url: str, recipients: int, channel: str, provider_type: str, data: dict[str, Any]
) -> tuple[int, int]:
    """A project, N profiles on one static list, the provider, a blast campaign with its
    template (a draft). The campaign id and the project id."""
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
                            "phone": f"+6140{i:07d}",
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
                "type": provider_type,
                "name": "sink",
                "channel": channel,
                "is_default": True,
                "rate_limit": 0,
                "rate_interval": "second",
                "data": data,
            },
        )
        subscription = services.messaging.subscriptions.default_for(project.id, channel)
        campaign = store.create_campaign(
            project.id,
            {
                "type": "blast",
                "name": "Bench",
                "channel": channel,
                "subscription_id": subscription.id,
                "list_ids": [list_id],
            },
        )
        template = TEXT_TEMPLATE if channel == "text" else EMAIL_TEMPLATE
        store.create_template(project.id, campaign["id"], "en", template)
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


# -- the blast through `tidings worker` -----------------------------------------------------------


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_worker_blast(
    url: str,
    project_id: int,
    campaign_id: int,
    recipients: int,
    sinks: Sinks | None,
    worker_nice: int = 0,
) -> dict[str, Any]:
    env = {
        **os.environ,
        "TIDINGS_DATABASE_URL": url,
        "TIDINGS_DEMO_PROJECT": "false",
        "TIDINGS_WEBHOOK_ALLOW_PRIVATE": "1",  # the sinks are on 127.0.0.1
        # No API shares the machine with this worker: it need not yield to one (the
        # default niceness of 10 measured the other processes on a busy machine).
        "TIDINGS_WORKER_NICE": str(worker_nice),
    }
    if sinks is not None:
        sinks.reset()
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
        time.sleep(1.5)  # let it start and go idle
        cpu_before = _cpu_seconds(process)
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
        worker_cpu = _cpu_seconds(process) - cpu_before
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
    sent = counts.get("sent", 0)
    return {
        "recipients": recipients,
        "sent": sent,
        "other_states": {k: v for k, v in counts.items() if k != "sent"},
        "sink": sinks.stats() if sinks is not None else None,
        "scheduled_to_finished_s": round(elapsed, 2),
        "sends_per_s_end_to_end": round(recipients / elapsed, 1),
        "sends_per_s_delivery_phase": round(sent / delivery_seconds, 1),
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_ms_per_send": round(worker_cpu / max(sent, 1) * 1000, 3),
        "sends_per_worker_cpu_s": round(sent / max(worker_cpu, 1e-6), 1),
        "peak_worker_rss_mb": round(peak / 2**20, 1),
    }


# -- the same blast in this process, counting statements ------------------------------------------


def count_queries(
    url: str,
    recipients: int,
    channel: str,
    provider_type: str,
    data: dict[str, Any],
    sinks: Sinks | None,
) -> dict[str, Any]:
    """Deliver a blast in this process, counting the SQL statements delivery issues."""
    campaign_id, project_id = setup(url, recipients, channel, provider_type, data)
    schedule(url, project_id, campaign_id)
    services = build(_settings(url, run_worker=False))
    assert services.messaging is not None
    if sinks is not None:
        sinks.reset()
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
        tracker=services.tracker,  # emails are tracked, as in the worker
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

    cpu = time.process_time()
    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    services.close()
    return {
        "recipients": recipients,
        "statements": statements[0],
        "queries_per_send": round(statements[0] / recipients, 4),
        "delivery_only_sends_per_s": round(recipients / elapsed, 1),
        "delivery_only_cpu_ms_per_send": round(cpu / recipients * 1000, 3),
        "sink": sinks.stats() if sinks is not None else None,
    }


# -- report ---------------------------------------------------------------------------------------


def _ratio(value: float, target: float) -> str:
    return f"{value / target:.2f}"


def report(result: dict[str, Any]) -> str:
    blast, queries = result["blast"], result["queries"]
    # The rate target is the HTTP sink's; other sinks show their ratio to it for scale.
    rate_target = f"{TARGET_RATE:,.0f}" + ("" if result["sink"] == "http" else " (HTTP's)")
    lines = [
        f"Sends benchmark: {blast['recipients']:,} recipients, sink {result['sink']} "
        f"({result['provider']}), {result['backend']}, {result['machine']}",
        f"load average {result['load_average_at_start']} at the start, "
        f"{result['load_average_at_end']} at the end (cores: {psutil.cpu_count()}); "
        f"worker niceness {result['worker_nice']}",
        "",
        "| figure | value | target | ratio |",
        "|---|---|---|---|",
    ]
    sink = blast.get("sink")
    received = (
        f"; the sink received {sink['messages']:,} messages for {sink['recipients']:,} recipients"
        if sink
        else ""
    )
    others = ", ".join(f"{k} {v}" for k, v in blast["other_states"].items()) or "none other"
    lines += [
        f"| sent | {blast['sent']:,} of {blast['recipients']:,} ({others}){received} "
        "| all, once | |",
        f"| scheduled → finished | {blast['scheduled_to_finished_s']} s | | |",
        f"| sends/s, end to end | {blast['sends_per_s_end_to_end']:,} | {rate_target} | "
        f"{_ratio(blast['sends_per_s_end_to_end'], TARGET_RATE)} |",
        f"| sends/s, delivery phase (first to last `sent_at`) | "
        f"{blast['sends_per_s_delivery_phase']:,} | {rate_target} | "
        f"{_ratio(blast['sends_per_s_delivery_phase'], TARGET_RATE)} |",
        f"| worker CPU per send (delivery + the events' processing) | "
        f"{blast['worker_cpu_ms_per_send']} ms | | |",
        f"| sends per worker CPU-second (sends/s with a core of its own) | "
        f"{blast['sends_per_worker_cpu_s']:,} | {rate_target} | "
        f"{_ratio(blast['sends_per_worker_cpu_s'], TARGET_RATE)} |",
        f"| peak worker RSS | {blast['peak_worker_rss_mb']} MB | < {MEMORY_CEILING_MB:.0f} MB | "
        f"{_ratio(blast['peak_worker_rss_mb'], MEMORY_CEILING_MB)} |",
    ]
    if queries:
        lines += [
            f"| SQL statements per send ({queries['recipients']:,} in-process) | "
            f"{queries['queries_per_send']} ({queries['statements']:,} statements) | "
            "no per-recipient query | |",
            f"| delivery alone in-process: sends/s · CPU per send | "
            f"{queries['delivery_only_sends_per_s']:,} · "
            f"{queries['delivery_only_cpu_ms_per_send']} ms | {rate_target} | "
            f"{_ratio(queries['delivery_only_sends_per_s'], TARGET_RATE)} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sink", choices=("http", "smtp", "logger"), default="http")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--queries-sample", type=int, default=10_000)
    parser.add_argument("--smtp-connections", type=int, default=8)
    parser.add_argument(
        "--worker-nice", type=int, default=0, help="TIDINGS_WORKER_NICE of the worker (0)"
    )
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sinks = Sinks() if args.sink != "logger" else None
    try:
        channel, provider_type, data = provider_for(args.sink, sinks, args.smtp_connections)
        with tempfile.TemporaryDirectory(prefix="tidings-bench-sends-") as tmp:
            url = args.database_url or f"sqlite:///{tmp}/bench.db"
            t0 = time.monotonic()
            campaign_id, project_id = setup(url, args.recipients, channel, provider_type, data)
            print(
                f"setup: {args.recipients} recipients in {time.monotonic() - t0:.1f} s", flush=True
            )
            blast = run_worker_blast(
                url, project_id, campaign_id, args.recipients, sinks, args.worker_nice
            )
            queries = None
            if args.queries_sample and not args.database_url:
                queries = count_queries(
                    f"sqlite:///{tmp}/queries.db",
                    args.queries_sample,
                    channel,
                    provider_type,
                    data,
                    sinks,
                )
    finally:
        if sinks is not None:
            sinks.stop()
    result = {
        "machine": f"{platform.node()} {platform.machine()} {psutil.cpu_count()} cores",
        "python": platform.python_version(),
        "sink": args.sink,
        "provider": provider_type,
        "worker_nice": args.worker_nice,
        "load_average_at_start": load_at_start,
        "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "backend": "postgresql" if args.database_url else "sqlite",
        "blast": blast,
        "queries": queries,
        "targets": {
            "sends_per_s": TARGET_RATE,
            "ratio_delivery_phase": round(blast["sends_per_s_delivery_phase"] / TARGET_RATE, 2),
            "ratio_end_to_end": round(blast["sends_per_s_end_to_end"] / TARGET_RATE, 2),
            "ratio_per_worker_cpu_second": round(blast["sends_per_worker_cpu_s"] / TARGET_RATE, 2),
            "memory_ceiling_mb": MEMORY_CEILING_MB,
            "memory_ratio": round(blast["peak_worker_rss_mb"] / MEMORY_CEILING_MB, 2),
        },
    }
    print(json.dumps(result, indent=2))
    print()
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
