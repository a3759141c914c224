"""Fork safety against the real server: parent and child each deliver their own events once."""

import multiprocessing
import uuid

import pytest

import tidings_client as tc
from helpers import run_in_child

pytestmark = pytest.mark.server


def uid():
    return f"u_{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("spool", [False, True])
def test_parent_and_child_events_are_each_stored_once(tidings_server, tmp_path, spool):
    ext = uid()
    client = tc.BatchingClient(
        tidings_server.public_key,
        base_url=tidings_server.url,
        flush_interval=60,
        spool_path=str(tmp_path / "spool.db") if spool else None,
    )
    for i in range(5):
        client.track("Parent", {"i": i}, external_id=ext)

    def child():
        for i in range(5, 8):
            client.track("Child", {"i": i}, external_id=ext)
        assert client.flush(timeout=30)
        client.close()

    assert run_in_child(child) == 0
    assert client.flush(timeout=30)
    client.close()
    events = tidings_server.wait_for_events(ext, 8)
    assert sorted(e["data"]["i"] for e in events) == list(range(8))


def _child_tracks(client, ext):
    for i in range(3):
        client.track("From a pool child", {"i": i}, external_id=ext)


def test_multiprocessing_fork_children_deliver_at_exit(tidings_server):
    ext = uid()
    client = tc.BatchingClient(tidings_server.public_key, base_url=tidings_server.url)
    client.track("Parent", {"i": -1}, external_id=ext)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_child_tracks, args=(client, ext)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert client.flush(timeout=30)
    client.close()
    events = tidings_server.wait_for_events(ext, 7)
    assert sorted(e["data"]["i"] for e in events) == [-1, 0, 0, 1, 1, 2, 2]
