"""Fixtures: a real Tidings server on a free port, and a failing proxy in front of it.

The server tests are skipped (with the reason) when the ``tidings`` server package cannot be
imported: the SDK is testable on its own.
"""

from __future__ import annotations

import http.server
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

SERVER_START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TidingsServer:
    """A running ``tidings serve`` with one project."""

    url: str
    public_key: str
    secret_key: str
    project_id: int
    env: dict[str, str]
    log_path: Path
    extra_keys: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> dict[str, Any]:
        """Run ``python -m tidings ARGS --json`` against the server's database."""
        proc = subprocess.run(
            [sys.executable, "-m", "tidings", *args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tidings {' '.join(args)} failed: {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}/api/client{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=10,
        )

    def events(self, external_id: str) -> list[dict[str, Any]]:
        """Every stored event of a user, oldest first (follows the cursor)."""
        out: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            response = self.get(f"/users/{external_id}/events", **params)
            if response.status_code == 404:
                return []
            response.raise_for_status()
            page = response.json()
            out.extend(page["results"])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return list(reversed(out))

    def wait_for_events(
        self, external_id: str, count: int, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll until the user has at least ``count`` events (processing is asynchronous),
        then once more after the pipeline is idle, so that extra (duplicate) rows show too."""
        deadline = time.monotonic() + timeout
        events = self.events(external_id)
        while len(events) < count and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the server, not timing an assertion
            events = self.events(external_id)
        self.wait_idle(max(1.0, deadline - time.monotonic()))
        return self.events(external_id)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until /api/health reports no event waiting to be processed (when it says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/api/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return
            pending = _find_pending(body)
            if pending is None or pending == 0:
                return
            time.sleep(0.05)

    def user(self, external_id: str) -> httpx.Response:
        return self.get(f"/users/{external_id}")


def _find_pending(body: Any) -> int | None:
    if isinstance(body, dict):
        for key in ("log_lag", "pending", "backlog"):
            if isinstance(body.get(key), int):
                return int(body[key])
        for value in body.values():
            found = _find_pending(value)
            if found is not None:
                return found
    return None


def _server_package_missing() -> str | None:
    try:
        importlib.import_module("tidings")
        importlib.import_module("tidings.cli")
    except Exception as exc:
        return f"the Tidings server package is not importable ({exc!r})"
    return None


@pytest.fixture(scope="session")
def tidings_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TidingsServer]:
    """``tidings serve`` on 127.0.0.1 with a fresh SQLite database and one project."""
    reason = _server_package_missing()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("tidings-server")
    env = {
        **os.environ,
        "TIDINGS_DATABASE_URL": f"sqlite:///{workdir / 'tidings.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    for args in (["migrate"],):
        proc = subprocess.run(
            [sys.executable, "-m", "tidings", *args], env=env, capture_output=True, timeout=120
        )
        if proc.returncode != 0:
            pytest.fail(f"tidings migrate failed: {proc.stderr.decode()[-2000:]}")
    port = _free_port()
    log_path = workdir / "server.log"
    server = TidingsServer(
        url=f"http://127.0.0.1:{port}",
        public_key="",
        secret_key="",
        project_id=0,
        env=env,
        log_path=log_path,
    )
    keys = server.cli("project", "create", "--name", "sdk-tests")
    server.public_key, server.secret_key = keys["public_key"], keys["secret_key"]
    server.project_id = int(keys["project_id"])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"tidings serve exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tidings serve not healthy in time: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)  # waiting for a process to start
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


@pytest.fixture(scope="session")
def support_key(tidings_server: TidingsServer) -> str:
    """A secret key with the lowest role, for permission errors."""
    try:
        created = tidings_server.cli(
            "key", "create", "--project", str(tidings_server.project_id), "--role", "support"
        )
    except RuntimeError as exc:
        pytest.skip(f"cannot create a support key: {exc}")
    return str(created["key"])


class FailingProxy(http.server.ThreadingHTTPServer):
    """A proxy to the real server that fails the first ``fail_first`` ``POST …/events``.

    ``mode`` says how: ``"reject"`` answers ``status`` without forwarding; ``"lose_ack"``
    forwards (the server stores the events) and then answers ``status`` anyway, like an
    acknowledgement lost on the way back; ``"hang"`` forwards and never answers.
    """

    daemon_threads = True

    def __init__(self, upstream: str, fail_first: int, status: int, mode: str) -> None:
        self.upstream = upstream
        self.remaining = fail_first
        self.status = status
        self.mode = mode
        self.lock = threading.Lock()
        self.seen: list[tuple[int, bytes]] = []
        self.forwarded = threading.Event()
        self.stop = threading.Event()
        self.http = httpx.Client(timeout=30)
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def event_posts(self) -> list[bytes]:
        with self.lock:
            return [body for _, body in self.seen]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        proxy: FailingProxy = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with proxy.lock:
            fail = self.command == "POST" and self.path.endswith("/events") and proxy.remaining > 0
            if fail:
                proxy.remaining -= 1
        upstream = None
        if not fail or proxy.mode in ("lose_ack", "hang"):
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
            }
            upstream = proxy.http.request(
                self.command, proxy.upstream + self.path, headers=headers, content=body
            )
            if fail:
                proxy.forwarded.set()
        if fail and proxy.mode == "hang":
            proxy.stop.wait(60)
            self.close_connection = True
            return
        if fail:
            status = proxy.status
            content = json.dumps(
                {
                    "status": "error",
                    "code": "service_unavailable",
                    "message": "proxy says no",
                    "error": "proxy says no",
                    "request_id": "req_PROXY",
                }
            ).encode()
            headers_out = {"Content-Type": "application/problem+json", "Retry-After": "0"}
        else:
            assert upstream is not None
            status, content = upstream.status_code, upstream.content
            headers_out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "date")
            }
        if self.command == "POST" and self.path.endswith("/events"):
            with proxy.lock:
                proxy.seen.append((status, body))
        self.send_response(status)
        for key, value in headers_out.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_proxy(tidings_server: TidingsServer) -> Iterator[Any]:
    """``failing_proxy(fail_first=2, status=503, mode="reject")`` → a started proxy."""
    proxies: list[FailingProxy] = []

    def start(fail_first: int, status: int = 503, mode: str = "reject") -> FailingProxy:
        proxy = FailingProxy(tidings_server.url, fail_first, status, mode)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop.set()
        proxy.shutdown()
        proxy.server_close()
        proxy.http.close()
