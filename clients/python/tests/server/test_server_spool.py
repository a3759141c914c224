"""Spool recovery: a host killed with SIGKILL loses nothing, and nothing is stored twice."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import tidings_client as tc

pytestmark = pytest.mark.server

HOST = textwrap.dedent(
    """
    import sys
    import tidings_client as tc

    spool, url, key, ext, n = sys.argv[1:6]
    client = tc.BatchingClient(
        key, base_url=url, spool_path=spool, flush_interval=0.05,
        retry=tc.RetryPolicy(backoff=0.05, max_backoff=0.2), timeout=60,
    )
    for i in range(int(n)):
        client.track("Spooled", {"i": i}, external_id=ext)
    print("TRACKED", flush=True)
    sys.stdin.read()  # stay alive until killed
    """
)


def spool_rows(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def run_host_until_killed(spool, url, key, ext, n, killed_when=None):
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(spool), url, key, ext, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Bounded: a watchdog kills the host if it never reports.
        watchdog = threading.Timer(60, host.kill)
        watchdog.start()
        line = host.stdout.readline()
        watchdog.cancel()
        assert line.strip() == "TRACKED", host.stderr.read()
        if killed_when is not None:
            assert killed_when.wait(30), "the host never sent a batch"
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait(30)
    assert host.returncode == -signal.SIGKILL


@pytest.mark.parametrize("outage", ["nothing listening", "ack lost, then host killed"])
def test_events_survive_sigkill_and_are_stored_exactly_once(
    tidings_server, failing_proxy, tmp_path, outage
):
    spool = tmp_path / "host-spool.db"
    ext = f"u_{uuid.uuid4().hex[:12]}"
    n = 250
    if outage == "nothing listening":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
        run_host_until_killed(spool, url, tidings_server.public_key, ext, n)
    else:
        # The proxy hands each batch to the server (which stores it), then never answers.
        proxy = failing_proxy(fail_first=10**6, mode="hang")
        run_host_until_killed(
            spool, proxy.url, tidings_server.public_key, ext, n, killed_when=proxy.forwarded
        )
    assert spool_rows(spool) == n  # every event tracked before the kill is on disk

    # The next start of the host, now with a reachable server.
    recovered = tc.BatchingClient(
        tidings_server.public_key, base_url=tidings_server.url, spool_path=str(spool)
    )
    assert recovered.flush(timeout=30)
    recovered.close()
    assert spool_rows(spool) == 0
    events = tidings_server.wait_for_events(ext, n)
    assert sorted(e["data"]["i"] for e in events) == list(range(n))


def test_a_spooled_host_delivers_normally(tidings_server, tmp_path):
    ext = f"u_{uuid.uuid4().hex[:12]}"
    client = tc.BatchingClient(
        tidings_server.public_key, base_url=tidings_server.url, spool_path=str(tmp_path / "s.db")
    )
    for i in range(120):
        client.track("Spooled", {"i": i}, external_id=ext)
    assert client.flush(timeout=30)
    client.close()
    events = tidings_server.wait_for_events(ext, 120)
    assert sorted(e["data"]["i"] for e in events) == list(range(120))
    assert os.path.exists(tmp_path / "s.db")
