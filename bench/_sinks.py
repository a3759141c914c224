"""The sinks of bench/sends.py, in one process of their own on 127.0.0.1: an aiohttp
server taking the ``http_sms`` provider's ``POST /sms`` (answering ``200 {"id": …}``)
and an aiosmtpd server; both count what they receive, one entry per recipient
(``GET /stats``: messages and distinct recipients; ``POST /reset``)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import urllib.request
from typing import Any


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _sink_main(http_port: int, smtp_port: int, ready: Any) -> None:
    from aiohttp import web
    from aiosmtpd.smtp import SMTP

    received: list[str] = []  # one entry per message: its recipient

    async def sms(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(str(body.get("to")))
        return web.json_response({"id": f"m{len(received)}"})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"messages": len(received), "recipients": len(set(received))})

    async def reset(_: web.Request) -> web.Response:
        received.clear()
        return web.json_response({})

    class Mailbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.extend(envelope.rcpt_tos)
            return "250 OK"

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/sms", sms)
        app.router.add_get("/stats", stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", http_port, backlog=1024).start()
        loop = asyncio.get_running_loop()
        handler = Mailbox()
        await loop.create_server(
            lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", smtp_port
        )
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class Sinks:
    """The sink process: started, asked what it received, stopped."""

    def __init__(self) -> None:
        self.http_port, self.smtp_port = _free_port(), _free_port()
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        self.process = context.Process(
            target=_sink_main, args=(self.http_port, self.smtp_port, ready), daemon=True
        )
        self.process.start()
        if not ready.wait(60):
            raise SystemExit("the sink did not start")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            method=method,
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (http://127.0.0.1)
            return dict(json.loads(answer.read()))

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
