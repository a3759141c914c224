"""CPU per ingest request without HTTP: the ASGI app called directly, for profiling.

``bench/ingest.py`` measures the real server over loopback; this script takes uvicorn
and the load generator out, so that a change to the ingest path shows up as microseconds
of CPU per request (process CPU: the event loop and the group committer), with little
noise from the machine. It builds the app on a fresh SQLite file (``synchronous=FULL``,
keys cached as in production), runs no worker, and sends ``--requests`` requests from
``--concurrency`` tasks.

    .venv/bin/python bench/ingest_inproc.py                 # single events and batches
    .venv/bin/python bench/ingest_inproc.py --batch 100 --requests 2000
    py-spy record -f raw -o /tmp/p.txt -- .venv/bin/python bench/ingest_inproc.py --batch 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import uvloop
from starlette.types import Message

from tidings.api.app import create_app
from tidings.bootstrap import build, ensure_schema
from tidings.domain.auth import Scope
from tidings.settings import Settings

PATH = b"/api/client/events"


def _bodies(batch: int, users: int = 20_000) -> list[bytes]:
    note = "x" * 100
    return [
        msgspec.json.encode(
            [
                {
                    "name": "Order placed",
                    "external_id": f"u_{(n * batch + j) % users}",
                    "data": {"total": 129.5, "sku": "abc-123", "items": [1, 2, 3], "note": note},
                }
                for j in range(batch)
            ]
        )
        for n in range(200)
    ]


async def post_events(app: Any, auth: bytes, body: bytes) -> None:
    """One ``POST /api/client/events`` straight into the ASGI app; it must answer 204."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH.decode(),
        "raw_path": PATH,
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", auth),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [204]:
        raise RuntimeError(f"the app answered {statuses}")


async def _run(batch: int, requests: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'tidings.db'}",  # type: ignore[arg-type]
            run_worker=False,
            demo_project=False,
            sqlite_synchronous="FULL",
        )
        services = build(settings)
        ensure_schema(services.db, auto_migrate=True)
        services.start()
        try:
            project = services.projects.create_project("bench", locale="en-AU", timezone=None)
            key = services.projects.create_key(project.id, Scope.PUBLIC).key
            app = create_app(services, manage_lifecycle=False)
            bodies = _bodies(batch)
            auth = f"Bearer {key}".encode()

            async def one(n: int) -> None:
                await post_events(app, auth, bodies[n % len(bodies)])

            async def client(first: int) -> None:
                for n in range(first, requests, concurrency):
                    await one(n)

            await asyncio.gather(*(client(c) for c in range(min(concurrency, 8))))  # warm-up
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(client(c) for c in range(concurrency)))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            services.stop()
            services.close()
    return {
        "req_per_s": requests / wall,
        "events_per_s": requests * batch / wall,
        "cpu_us_per_request": 1e6 * cpu / requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, action="append", help="events per request (1, 100)")
    parser.add_argument("--requests", type=int, help="requests per run (20,000 / batch ÷ 10)")
    parser.add_argument("--concurrency", type=int, help="concurrent requests (64; 16 batches)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; medians")
    opts = parser.parse_args()
    for batch in opts.batch or [1, 100]:
        requests = opts.requests or (20_000 if batch == 1 else 2_000)
        concurrency = opts.concurrency or (64 if batch == 1 else 16)
        runs = [uvloop.run(_run(batch, requests, concurrency)) for _ in range(max(1, opts.repeats))]
        cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
        eps = statistics.median(r["events_per_s"] for r in runs)
        rps = statistics.median(r["req_per_s"] for r in runs)
        print(
            f"{batch:>3}-event requests: {rps:,.0f} req/s = {eps:,.0f} events/s, "
            f"CPU {cpu:,.0f} us/request (median of {len(runs)}; no HTTP, no worker)"
        )


if __name__ == "__main__":
    main()
