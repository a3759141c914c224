"""Provider adapters alone: sends/s of one adapter instance into local sinks.

```sh
.venv/bin/python bench/providers.py                 # 20,000 HTTP sends, 5,000 mails
.venv/bin/python bench/providers.py --http 5000 --smtp 1000
```

What one delivery worker's event loop can push through an adapter, without the outbox
around it: ``--http`` text messages through the ``http_sms`` adapter and as many webhook
calls through ``webhook`` into an HTTP/1.1 sink (a bare asyncio server answering 200 to
every request, keep-alive), then ``--smtp`` mails through ``smtp`` into an aiosmtpd server.
Each sink runs in a process of its own, so it does not share this process's interpreter
lock. ``--concurrency`` sends are in flight at once (the worker's window). Target: 2,000
sends/s into the HTTP sink (issue 20's per-worker figure; the worker adds its own costs on
top). Every loop is bounded; the sinks listen on 127.0.0.1 only and are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tidings.domain.channels import EmailMessage, Outcome, TextMessage, WebhookMessage
from tidings.messaging.providers import build_adapter

TARGET = 2000.0
_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id":"m1"}'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http_sink(port: int, ready: multiprocessing.synchronize.Event) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(_OK)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _smtp_sink(port: int, ready: multiprocessing.synchronize.Event) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


async def _run(
    adapter_type: str, data: dict[str, object], messages: list[object], concurrency: int
) -> tuple[float, int]:
    adapter = build_adapter(adapter_type, data)
    queue = iter(messages)
    failed = 0

    async def lane() -> None:
        nonlocal failed
        for message in queue:
            result = await adapter.send(message)  # type: ignore[arg-type]
            if result.outcome is not Outcome.ACCEPTED:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await adapter.aclose()
    return len(messages) / elapsed, failed


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--http", type=int, default=20_000, help="HTTP sends per adapter")
    parser.add_argument("--smtp", type=int, default=5_000, help="mails")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    http_port, smtp_port = _free_port(), _free_port()
    sinks = []
    for target, port in ((_http_sink, http_port), (_smtp_sink, smtp_port)):
        ready = context.Event()
        process = context.Process(target=target, args=(port, ready), daemon=True)
        process.start()
        if not ready.wait(30):
            raise SystemExit("a sink did not start")
        sinks.append(process)
    try:
        rows = []
        url = f"http://127.0.0.1:{http_port}"
        texts = [
            TextMessage(to=f"+614000{i:05d}", body=f"Your code is {i:06d}")
            for i in range(args.http)
        ]
        hooks = [
            WebhookMessage(
                method="POST",
                url=f"{url}/hook",
                headers={"Content-Type": "application/json"},
                body=f'{{"n": {i}}}',
            )
            for i in range(args.http)
        ]
        mails = [
            EmailMessage(
                to=f"u{i}@example.com",
                from_address="news@shop.example",
                subject=f"Hello {i}",
                html="<p>" + "Hello there. " * 40 + "</p>",
                text="Hello there. " * 40,
                headers={"List-Unsubscribe": "<https://t.example/unsubscribe/x>"},
            )
            for i in range(args.smtp)
        ]
        for name, kind, data, messages in (
            ("http_sms → HTTP sink", "http_sms", {"url": f"{url}/sms", "api_key": "k"}, texts),
            ("webhook → HTTP sink", "webhook", {}, hooks),
            (
                "smtp → aiosmtpd",
                "smtp",
                {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "pool_size": 8},
                mails,
            ),
        ):
            cpu = _cpu()
            rate, failed = asyncio.run(_run(kind, data, messages, args.concurrency))
            used = _cpu() - cpu
            per_send_ms = used / len(messages) * 1000
            rows.append((name, len(messages), rate, failed, per_send_ms))
            print(
                f"{name}: {len(messages)} sends, {rate:,.0f}/s "
                f"({rate / TARGET:.2f} of the 2,000/s target), {failed} failed, "
                f"{per_send_ms:.3f} ms CPU per send in this process",
                flush=True,
            )
        print()
        print("| adapter → sink | sends | sends/s | ratio to 2,000/s | CPU ms/send (sender) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, count, rate, _, per_send in rows:
            print(f"| {name} | {count:,} | {rate:,.0f} | {rate / TARGET:.2f} | {per_send:.3f} |")
    finally:
        for process in sinks:
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()


if __name__ == "__main__":
    main()
