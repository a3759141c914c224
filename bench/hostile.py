"""Hostile requests beside normal traffic: do normal requests keep their latency?

    .venv/bin/python bench/hostile.py [--duration S] [--normal N] [--hostile N]

Starts a fresh ``tidings serve`` (temp dir, SQLite), then

1. times each kind of hostile request, one at a time, against a normal single-event
   request (the median of ``--samples`` each): what one hostile request costs the server,
   as a multiple of a normal one (``COST_CEILING``);
2. measures single-event ingest latency of ``--normal`` closed-loop clients twice,
   ``--duration`` seconds each: alone, then while hostile requests arrive at
   ``--hostile-rate`` requests per second in all (``CEILING`` on the ratio of p99s).

The hostile requests, with the project's public key or none (issue 18):

- ``/v1/batch`` gzip bodies of 20,000 empty members (~400 KB; quadratic to inflate before),
- JSON nested 5,000 levels deep on ``/api/client/events`` and ``/v1/track``,
- ``/api/client/identify`` with 32 KB of traits, nested 33 levels (refused),
- unknown keys and no key, and forged cursors on ``GET /api/client/users``.

Prints both, the hostile requests' status codes, and fails only when a hostile request
got a 5xx. Before issue 18, one gzip body of 20,000 empty members held the event loop
for ~0.35 s and deep JSON answered 500.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

import _load

CEILING = 2.0
COST_CEILING = 2.0
NO_ANSWER = 599


def _hostile_requests(pk: str, sk: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) of each hostile request of the rotation."""
    basic = "Basic " + base64.b64encode(f"{pk}:".encode()).decode()
    json_type = {"Content-Type": "application/json"}
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    cursor = base64.urlsafe_b64encode(b'["n", 99999999999999999999999, "a\\u0000"]').decode()
    return [
        (
            "POST",
            "/v1/batch",
            {**json_type, "Authorization": basic, "Content-Encoding": "gzip"},
            gzip.compress(b"") * 20_000,
        ),
        (
            "POST",
            "/api/client/events",
            {**json_type, "Authorization": f"Bearer {pk}"},
            f'[{{"name":"E","external_id":"h","data":{deep}}}]'.encode(),
        ),
        (
            "POST",
            "/v1/track",
            {**json_type, "Authorization": basic},
            f'{{"userId":"h","event":"E","properties":{deep}}}'.encode(),
        ),
        (
            "POST",
            "/api/client/identify",
            {**json_type, "Authorization": f"Bearer {pk}"},
            json.dumps(
                {
                    "external_id": "h",
                    "data": json.loads('{"a":' * 33 + json.dumps("x" * 32_000) + "}" * 33),
                }
            ).encode(),
        ),
        (
            "POST",
            "/api/client/events",
            {**json_type, "Authorization": "Bearer pk_unknown"},
            b'[{"name":"E","external_id":"h"}]',
        ),
        ("POST", "/v1/track", json_type, b'{"userId":"h","event":"E"}'),
        ("GET", f"/api/client/users?cursor={cursor}", {"Authorization": f"Bearer {sk}"}, b""),
    ]


async def _normal(client: httpx.AsyncClient, pk: str, until: float, n: int) -> list[float]:
    latencies = []
    headers = {"Authorization": f"Bearer {pk}", "Content-Type": "application/json"}
    i = 0
    while time.monotonic() < until:
        i += 1
        body = _load.make_body(f"n{n}", i, 1, 1000)
        start = time.perf_counter()
        r = await client.post("/api/client/events", content=body, headers=headers)
        latencies.append(time.perf_counter() - start)
        if r.status_code != 204:
            raise RuntimeError(f"normal request answered {r.status_code}: {r.text[:200]}")
    return latencies


async def _hostile(
    client: httpx.AsyncClient, requests: list, until: float, rate: float, codes: Counter
) -> None:
    """Hostile requests at ``rate`` per second (open loop: one task each, on schedule)."""

    async def one(method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        codes[(path.split("?")[0], await _status(client, method, path, headers, body))] += 1

    tasks = []
    start = time.monotonic()
    i = 0
    while time.monotonic() < until:
        tasks.append(asyncio.create_task(one(*requests[i % len(requests)])))
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    await asyncio.gather(*tasks)


async def _status(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes
) -> int:
    """The answer's status; 599 when the server closed the connection without one."""
    try:
        return (await client.request(method, path, headers=headers, content=body)).status_code
    except httpx.HTTPError:
        return NO_ANSWER


async def _costs(base: str, pk: str, sk: str, samples: int) -> list[tuple[str, int, float]]:
    """(what, status, median seconds) of a normal request and of each hostile kind."""
    normal = (
        "POST",
        "/api/client/events",
        {"Authorization": f"Bearer {pk}", "Content-Type": "application/json"},
        _load.make_body("cost", 1, 1, 10),
    )
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for method, path, headers, body in [normal, *_hostile_requests(pk, sk)]:
            times = []
            for _ in range(samples):
                t = time.perf_counter()
                status = await _status(client, method, path, headers, body)
                times.append(time.perf_counter() - t)
            what = f"{method} {path.split('?')[0]} ({len(body) // 1024} KB"
            what += f", {headers['Content-Encoding']})" if "Content-Encoding" in headers else ")"
            out.append((what, status, statistics.median(times)))
    return out


async def _phase(base: str, pk: str, sk: str, args: argparse.Namespace, hostile: bool):
    codes: Counter = Counter()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        until = time.monotonic() + args.duration
        normal = [_normal(client, pk, until, n) for n in range(args.normal)]
        tasks = []
        if hostile:
            requests = _hostile_requests(pk, sk)
            tasks = [_hostile(client, requests, until, args.hostile_rate, codes)]
        results = await asyncio.gather(*normal, *tasks)
    latencies = sorted(x for r in results[: args.normal] for x in r)
    return latencies, codes


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--normal", type=int, default=4, help="closed-loop normal clients")
    parser.add_argument("--hostile-rate", type=float, default=40.0, help="hostile req/s")
    parser.add_argument("--samples", type=int, default=30, help="requests per cost figure")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-hostile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=f"sqlite:///{workdir / 'tidings.db'}", TIDINGS_DEMO_PROJECT="false"
    )

    def cli(*cmd: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "tidings", *cmd],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode:
            raise RuntimeError(r.stderr)
        return r.stdout

    cli("migrate")
    out = cli("project", "create", "--name", "bench", "--json")
    project = json.loads(next(ln for ln in reversed(out.splitlines()) if ln.startswith("{")))
    pk, sk = project["public_key"], project["secret_key"]
    port = _load.free_port()
    log = workdir / "server.log"
    proc = _load.start_process(
        [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log=log,
    )
    base = f"http://127.0.0.1:{port}"
    load = os.getloadavg()[0]
    try:
        _load.wait_ready(base, proc, timeout=60, log=log)
        costs = asyncio.run(_costs(base, pk, sk, args.samples))
        with httpx.Client(base_url=base, timeout=5) as health:
            _load.wait_for_lag_zero(health, timeout=120)
        alone, _ = asyncio.run(_phase(base, pk, sk, args, hostile=False))
        with httpx.Client(base_url=base, timeout=5) as health:  # start both phases caught up
            _load.wait_for_lag_zero(health, timeout=120)
        beside, codes = asyncio.run(_phase(base, pk, sk, args, hostile=True))
    finally:
        _load.stop_process(proc)
    print(f"cores: {os.cpu_count()}, load average before: {load:.1f}")
    print(f"cost of one request (median of {args.samples}, one at a time):")
    normal_cost = costs[0][2]
    worst = 0.0
    for what, status, seconds in costs:
        ratio = seconds / normal_cost
        worst = max(worst, ratio)
        print(f"  {seconds * 1000:7.2f} ms  {ratio:5.2f}x normal  {status}  {what}")
    verdict = "ok" if worst <= COST_CEILING else "OVER"
    print(f"  costliest kind: {worst:.2f}x a normal request (ceiling {COST_CEILING}: {verdict})")
    print(
        f"normal clients: {args.normal} closed-loop; hostile: {args.hostile_rate:.0f} req/s; "
        f"{args.duration:.0f} s per phase"
    )
    for name, values in (("alone", alone), ("beside hostile", beside)):
        print(
            f"  {name:15s} {len(values):6d} requests  p50 {_pct(values, 0.5):7.1f} ms  "
            f"p99 {_pct(values, 0.99):7.1f} ms  mean {statistics.mean(values) * 1000:7.1f} ms"
        )
    ratio = _pct(beside, 0.99) / _pct(alone, 0.99)
    verdict = "ok" if ratio <= CEILING else "OVER"
    print(f"  p99 beside / alone: {ratio:.2f} (ceiling {CEILING:.1f}: {verdict})")
    print("  hostile answers:")
    for (path, status), count in sorted(codes.items()):
        print(f"    {status} {path}: {count}")
    errors = sum(c for (_, status), c in codes.items() if status >= 500)
    if errors:
        print(f"  {errors} hostile requests got a 5xx")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
