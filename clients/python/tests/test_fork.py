"""After os.fork() the child starts empty; exit hooks flush (no network)."""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import tidings_client as tc
from helpers import run_in_child
from tidings_client.testing import RecordingTransport

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_child_does_not_inherit_the_parents_queue():
    transport = RecordingTransport()
    client = tc.BatchingClient("pk", base_url="http://t", transport=transport, flush_interval=60)
    parent_ids = [client.track("parent", external_id="u") for _ in range(5)]
    assert client.queued == 5

    def child():
        assert client.queued == 0
        ids = [client.track("child", external_id="u") for _ in range(2)]
        assert client.flush(timeout=10)
        assert [e["message_id"] for e in transport.events] == ids

    assert run_in_child(child) == 0
    assert client.flush(timeout=10)
    assert [e["message_id"] for e in transport.events] == parent_ids
    client.close()


def test_fork_while_a_batch_is_in_flight():
    parent = os.getpid()
    release, entered = threading.Event(), threading.Event()

    def handler(request):
        if os.getpid() == parent and not release.is_set():
            entered.set()
            release.wait(30)
        return None

    transport = RecordingTransport(handler)
    client = tc.BatchingClient("pk", base_url="http://t", transport=transport, flush_interval=0)
    client.track("first", external_id="u")
    assert entered.wait(10)

    def child():
        client.track("child", external_id="u")
        assert client.flush(timeout=10)
        assert [e["name"] for e in transport.events][-1] == "child"

    assert run_in_child(child) == 0
    release.set()
    assert client.flush(timeout=10)
    assert [e["name"] for e in transport.events] == ["first"]
    client.close()


def test_plain_client_works_in_a_child():
    transport = RecordingTransport()
    client = tc.Client("pk", base_url="http://t", transport=transport)
    client.track("before", external_id="u")

    def child():
        client.track("in child", external_id="u")

    assert run_in_child(child) == 0


def test_forked_spool_users_send_each_row_once(tmp_path):
    sent_file = tmp_path / "sent.jsonl"

    def handler(request):
        with open(sent_file, "a") as f:
            for event in json.loads(request.content):
                f.write(json.dumps([os.getpid(), event["message_id"]]) + "\n")
        return None

    client = tc.BatchingClient(
        "pk",
        base_url="http://t",
        transport=RecordingTransport(handler),
        spool_path=str(tmp_path / "spool.db"),
        flush_interval=60,
    )
    ids = [client.track("parent", external_id="u") for _ in range(3)]

    def child():
        ids.extend(client.track("child", external_id="u") for _ in range(2))
        assert client.flush(timeout=10)

    assert run_in_child(child) == 0
    assert client.flush(timeout=10)
    client.close()
    sent = [json.loads(line)[1] for line in sent_file.read_text().splitlines()]
    assert len(sent) == 5 and len(set(sent)) == 5
    assert set(ids) <= set(sent)


def _track_in_mp_child(client):
    client.track("from mp child", external_id="u")


def test_multiprocessing_children_flush_on_exit(tmp_path):
    sent_file = tmp_path / "sent.jsonl"

    def handler(request):
        with open(sent_file, "a") as f:
            f.write(request.content.decode() + "\n")
        return None

    client = tc.BatchingClient(
        "pk", base_url="http://t", transport=RecordingTransport(handler), flush_interval=60
    )
    process = multiprocessing.get_context("fork").Process(target=_track_in_mp_child, args=(client,))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert "from mp child" in sent_file.read_text()
    client.close()


SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    import tidings_client as tc
    from tidings_client.testing import RecordingTransport

    out, hang = sys.argv[1], sys.argv[2] == "hang"
    never = threading.Event()

    def handler(request):
        if hang:
            never.wait()
        with open(out, "a") as f:
            f.write(request.content.decode() + "\\n")

    client = tc.BatchingClient("pk", base_url="http://t", transport=RecordingTransport(handler),
                               flush_interval=60, shutdown_timeout=0.5)
    for i in range(3):
        client.track("at exit", {"i": i}, external_id="u")
    # no flush, no close: the interpreter exits
    """
)


def test_queued_events_are_sent_at_interpreter_exit(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), "ok"], capture_output=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    events = [e for line in out.read_text().splitlines() for e in json.loads(line)]
    assert [e["data"]["i"] for e in events] == [0, 1, 2]


def test_exit_is_not_held_up_by_a_hanging_server(tmp_path):
    # The exit budget is 0.5 s; the subprocess timeout only keeps the test bounded.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "out"), "hang"],
        capture_output=True,
        timeout=30,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "still being sent" in proc.stderr or "dropped 3 event(s) (shutdown)" in proc.stderr
