"""CPU per processed event: the worker's consumer on a backlog, without HTTP.

``bench/ingest.py`` times the real server draining a backlog; this script takes uvicorn,
the load generator and the API's own work out, so that a change to the worker shows up
as microseconds of the consumer thread's CPU per event. It builds the services on a fresh
SQLite file, stops the consumer, accepts ``--events`` events through the ASGI app in
requests of ``--request-size``, then starts the consumer and times it (wall clock and the
consumer thread's CPU) until every entry is applied. ``--worker-batch`` sets
``TIDINGS_WORKER_BATCH_SIZE``: 1000 is the default; about 40 is what the worker reads per
pass under single-event load (it waits a few milliseconds after a small batch).

    .venv/bin/python bench/processing_inproc.py                       # batches of 40 and 1000
    .venv/bin/python bench/processing_inproc.py --worker-batch 1000 --events 100000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import uvloop

from ingest_inproc import post_events
from tidings.api.app import create_app
from tidings.bootstrap import build, ensure_schema
from tidings.domain.auth import Scope
from tidings.settings import Settings


async def _run(events: int, request_size: int, worker_batch: int, users: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'tidings.db'}",  # type: ignore[arg-type]
            demo_project=False,
            worker_mode="thread",
            worker_batch_size=worker_batch,
        )
        services = build(settings)
        ensure_schema(services.db, auto_migrate=True)
        services.start()
        consumer = services.consumer
        assert consumer is not None
        consumer.stop()  # the backlog builds up with nothing applying it
        try:
            project = services.projects.create_project("bench", locale="en-AU", timezone=None)
            key = services.projects.create_key(project.id, Scope.PUBLIC).key
            app = create_app(services, manage_lifecycle=False)
            auth = f"Bearer {key}".encode()
            note = "x" * 100
            for n in range(events // request_size):
                body = msgspec.json.encode(
                    [
                        {
                            "name": "Order placed",
                            "external_id": f"u_{(n * request_size + j) % users}",
                            "data": {"total": 129.5, "sku": "abc-1", "items": [1], "note": note},
                        }
                        for j in range(request_size)
                    ]
                )
                await post_events(app, auth, body)
            heads = sorted(services.log.heads().items())
            consumer.start()
            thread = next(t for t in threading.enumerate() if t.name == "tidings-consumer")
            assert thread.ident is not None
            clock = time.pthread_getcpuclockid(thread.ident)
            started, cpu = time.perf_counter(), time.clock_gettime(clock)
            if not await services.watch.wait(heads, 300):
                raise RuntimeError("the backlog was not applied within 300 s")
            wall, cpu = time.perf_counter() - started, time.clock_gettime(clock) - cpu
            if consumer.processed != events:
                raise RuntimeError(f"applied {consumer.processed} of {events} events")
        finally:
            services.stop()
    return {"events_per_s": events / wall, "cpu_us_per_event": 1e6 * cpu / events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-batch", type=int, action="append", help="40, 1000")
    parser.add_argument("--events", type=int, default=40_000, help="backlog size (40,000)")
    parser.add_argument("--request-size", type=int, default=100, help="events per request")
    parser.add_argument("--users", type=int, default=10_000, help="distinct users (10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; medians")
    opts = parser.parse_args()
    for size in opts.worker_batch or [40, 1000]:
        runs = [
            uvloop.run(_run(opts.events, opts.request_size, size, opts.users))
            for _ in range(max(1, opts.repeats))
        ]
        cpu = statistics.median(r["cpu_us_per_event"] for r in runs)
        eps = statistics.median(r["events_per_s"] for r in runs)
        print(
            f"worker batches of {size:>5}: {eps:,.0f} events/s, consumer CPU {cpu:,.1f} us/event "
            f"(median of {len(runs)}; {opts.events:,} events of {opts.users:,} users)"
        )


if __name__ == "__main__":
    main()
