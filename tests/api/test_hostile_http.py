"""Errors and slow clients: every error is problem+json with its request id; a client
that leaves mid-body is logged quietly; slow bodies and slow headers are cut off."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import Project, bearer
from tidings.api.app import create_app
from tidings.api.middleware import RequestIdMiddleware
from tidings.api.protocol import with_header_timeout
from tidings.bootstrap import Services


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://tidings.test")


def _assert_500_envelope(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "internal_error" and body["status"] == "error"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_an_unexpected_error_in_a_fastapi_route_is_a_problem_500(
    services: Services, project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    services.schema.list = broken  # type: ignore[method-assign]
    async with _client(create_app(services, manage_lifecycle=False)) as client:
        with caplog.at_level(logging.INFO):
            response = await client.get("/api/client/schema", headers=bearer(project.sk))
    _assert_500_envelope(response)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and response.headers["x-request-id"] in errors[0].getMessage()


async def test_an_unexpected_error_in_an_ingest_route_is_a_problem_500(
    services: Services, project: Project
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    services.committer.append = broken  # type: ignore[method-assign]
    async with _client(create_app(services, manage_lifecycle=False)) as client:
        response = await client.post(
            "/api/client/events",
            json=[{"name": "E", "external_id": "u"}],
            headers=bearer(project.pk),
        )
    _assert_500_envelope(response)


async def _call(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    messages: list[dict[str, Any]],
    hang: bool = False,
) -> list[dict[str, Any]]:
    """Drive the ASGI app by hand: ``messages`` are what ``receive`` returns in turn
    (then it hangs, when ``hang``, else says the client left)."""
    queue = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if hang:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("method", "path", "secret"),
    [
        ("POST", "/api/client/events", False),
        ("POST", "/v1/batch", False),
        ("POST", "/api/client/lists", True),
    ],
)
async def test_a_client_leaving_mid_body_is_logged_quietly(
    services: Services,
    project: Project,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    secret: bool,
) -> None:
    app = create_app(services, manage_lifecycle=False)
    key = project.sk if secret else project.pk
    headers = [
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
    ]
    first = {"type": "http.request", "body": b'[{"name": "E", "exter', "more_body": True}
    with caplog.at_level(logging.DEBUG):
        await _call(app, method, path, headers, [first])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records
    ]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_body_slower_than_the_timeout_is_answered_408(services: Services) -> None:
    async def reads_body(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestIdMiddleware(reads_body, body_timeout=0.05)
    trickle = [{"type": "http.request", "body": b"[", "more_body": True}]
    sent = await _call(app, "POST", "/api/client/events", [], trickle, hang=True)
    assert sent[0]["status"] == 408
    assert b"request_timeout" in sent[1]["body"]
    # A body that arrives in time is read as usual.
    whole = [{"type": "http.request", "body": b"[]", "more_body": False}]
    assert (await _call(app, "POST", "/x", [], whole, hang=True))[0]["status"] == 204


async def test_the_body_timeout_setting_reaches_every_route(
    services: Services, project: Project
) -> None:
    services.settings = services.settings.model_copy(update={"body_timeout": 0.05})
    app = create_app(services, manage_lifecycle=False)
    for path, secret in [
        ("/api/client/events", False),
        ("/v1/batch", False),
        ("/api/client/lists", True),
    ]:
        key = project.sk if secret else project.pk
        headers = [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
        ]
        trickle = [{"type": "http.request", "body": b"[", "more_body": True}]
        sent = await _call(app, "POST", path, headers, trickle, hang=True)
        assert sent[0]["status"] == 408, (path, sent)
        header_names = [name for name, _ in sent[0]["headers"]]
        assert b"x-request-id" in header_names


# -- slow headers: a real server on loopback -------------------------------------------------


async def _tiny_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def slow_header_server() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _tiny_app, http=with_header_timeout(0.3), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closes the connection (waits up to 10 s: far past 0.3 s)."""
    conn.settimeout(10)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "])
def test_headers_slower_than_the_timeout_close_the_connection(
    slow_header_server: int, sent: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", slow_header_server)) as conn:
        conn.sendall(sent)
        assert _closed_by_server(conn)


def test_a_request_whose_headers_arrive_in_time_is_answered(slow_header_server: int) -> None:
    with socket.create_connection(("127.0.0.1", slow_header_server)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(10)
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
