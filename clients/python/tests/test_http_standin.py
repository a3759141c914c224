"""Over real sockets, against a tiny stand-in server on 127.0.0.1 (no Tidings needed)."""

import http.server
import json
import socket
import threading

import pytest

import tidings_client as tc


class StandIn(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted status (then 204), recording bodies."""

    daemon_threads = True

    def __init__(self, script):
        self.script = list(script)
        self.bodies = []
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.bodies.append(body)
        status = server.script.pop(0) if server.script else 204
        if status == "hang":
            server.release.wait(10)
            status = 204
        if status == 204:
            self.send_response(204)
            self.send_header("X-Request-Id", "req_OK")
            self.end_headers()
            return
        payload = json.dumps(
            {
                "status": "error",
                "code": "service_unavailable",
                "message": "busy",
                "error": "busy",
                "request_id": "req_1",
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Retry-After", "0")
        self.send_header("X-Request-Id", "req_1")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def standin():
    servers = []

    def start(*script):
        server = StandIn(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def test_client_retries_503_twice_then_succeeds_with_identical_bodies(standin):
    server = standin(503, 503)
    client = tc.Client("sk", base_url=server.url, retry=tc.RetryPolicy(max_retries=3, backoff=0))
    mid = client.track("E", external_id="u")
    assert len(server.bodies) == 3 and len(set(server.bodies)) == 1
    assert json.loads(server.bodies[0])[0]["message_id"] == mid


def test_client_raises_server_error_with_request_id(standin):
    server = standin(503)
    with pytest.raises(tc.ServerError) as info:
        tc.Client("sk", base_url=server.url).identify(external_id="u")
    assert (info.value.status, info.value.code, info.value.request_id) == (
        503,
        "service_unavailable",
        "req_1",
    )


def test_batching_client_retries_503_then_204(standin):
    server = standin(503, 503)
    client = tc.BatchingClient("sk", base_url=server.url, retry=tc.RetryPolicy(backoff=0))
    ids = [client.track("E", external_id="u") for _ in range(3)]
    assert client.flush(timeout=10)
    assert len(server.bodies) == 3 and len(set(server.bodies)) == 1
    assert [e["message_id"] for e in json.loads(server.bodies[0])] == ids
    client.close()


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(tc.TidingsConnectionError):
        tc.Client("sk", base_url=f"http://127.0.0.1:{port}").track("E", external_id="u")


def test_a_slow_server_is_a_timeout_error(standin):
    server = standin("hang")
    with pytest.raises(tc.TidingsTimeoutError):
        tc.Client("sk", base_url=server.url, timeout=0.2).track("E", external_id="u")
