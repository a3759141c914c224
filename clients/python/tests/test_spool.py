"""The durable spool: written before track returns, deleted on 2xx, re-sent on restart."""

import os
import sqlite3
import subprocess
import sys

import httpx
import pytest

import tidings_client as tc
from tidings_client._spool import Item, Spool
from tidings_client.testing import RecordingTransport


def rows(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT message_id, owner FROM events ORDER BY id").fetchall()


def down():
    """A transport for a server that is down, for as long as the test runs."""
    return httpx.MockTransport(lambda request: httpx.Response(503))


def batching(path, transport, **kwargs):
    client = tc.BatchingClient(
        "pk", base_url="http://t", transport=transport, spool_path=str(path), **kwargs
    )
    client._backoff_wait = lambda seconds: None
    return client


def test_events_are_on_disk_when_track_returns(tmp_path):
    path = tmp_path / "spool.db"
    client = batching(path, down(), flush_interval=60)
    ids = [client.track("E", {"i": i}, external_id="u") for i in range(3)]
    assert [mid for mid, _ in rows(path)] == ids
    client.close(timeout=0)


def test_rows_are_deleted_once_acknowledged(tmp_path):
    path = tmp_path / "spool.db"
    transport = RecordingTransport()
    client = batching(path, transport)
    ids = [client.track("E", external_id="u") for _ in range(5)]
    assert client.flush(timeout=10)
    assert rows(path) == []
    assert [e["message_id"] for e in transport.events] == ids
    client.close()


def test_a_restart_resends_what_was_left_with_the_same_message_ids(tmp_path):
    path = tmp_path / "spool.db"
    first = batching(path, down())
    ids = [first.track("E", {"i": i}, external_id="u") for i in range(4)]
    assert first.flush(timeout=0.2) is False
    first.close(timeout=1)  # the sender stops retrying and releases its lease
    assert first.dropped == 0  # kept on disk, not dropped
    assert [mid for mid, owner in rows(path)] == ids
    assert all(owner is None for _, owner in rows(path))

    transport = RecordingTransport()
    second = batching(path, transport)  # starts sending on its own
    assert second.flush(timeout=10)
    assert [e["message_id"] for e in transport.events] == ids
    assert rows(path) == []
    second.close()


def test_transient_failures_are_retried_past_max_retries_with_a_spool(tmp_path):
    transport = RecordingTransport()
    transport.fail_next(*[503] * 5)
    client = batching(tmp_path / "s.db", transport, retry=tc.RetryPolicy(max_retries=1))
    client.track("E", external_id="u")
    assert client.flush(timeout=10)
    assert len(transport.requests) == 6
    client.close()


def test_rejected_events_leave_the_spool_and_are_reported(tmp_path):
    seen = []
    transport = RecordingTransport()
    transport.fail_next(422)
    path = tmp_path / "s.db"
    client = batching(path, transport, on_drop=seen.append)
    client.track("E", external_id="u")
    assert client.flush(timeout=10) is False
    assert [d.reason for d in seen] == [tc.DropReason.REJECTED]
    assert rows(path) == []
    client.close()


def test_a_full_spool_drops_and_reports(tmp_path):
    seen = []
    client = batching(
        tmp_path / "s.db", down(), spool_max_events=2, on_drop=seen.append, flush_interval=60
    )
    for _ in range(3):
        client.track("E", external_id="u")
    assert [d.reason for d in seen] == [tc.DropReason.SPOOL_FULL]
    client.close(timeout=0)


def test_an_unwritable_spool_drops_instead_of_raising(tmp_path):
    seen = []
    client = batching(tmp_path / "s.db", down(), on_drop=seen.append, flush_interval=60)
    client._spool.close()  # e.g. the file went away
    client.track("E", external_id="u")
    assert [d.reason for d in seen] == [tc.DropReason.SPOOL_ERROR]
    client.close(timeout=0)


# -- leases between processes ------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_live_owners_lease_is_respected_until_it_expires(tmp_path):
    clock = Clock()
    path = tmp_path / "s.db"
    a = Spool(path, clock=clock, lease_seconds=60)
    b = Spool(path, clock=clock, lease_seconds=60)
    a.append("m1", b"{}")
    assert [i.message_id for i in a.take(10, 10_000)] == ["m1"]
    assert b.take(10, 10_000) == []  # a is alive (same process, still open)
    clock.now += 61
    assert [i.message_id for i in b.take(10, 10_000)] == ["m1"]


def test_a_dead_owners_lease_is_taken_over_at_once(tmp_path):
    path = tmp_path / "s.db"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    dead_pid = int(dead.stdout)
    spool = Spool(path)
    spool.append("m1", b"{}")
    host = spool.owner.split(":")[0]
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE events SET owner = ?, lease_until = ?",
            (f"{host}:{dead_pid}:x", 10**12),
        )
    assert [i.message_id for i in spool.take(10, 10_000)] == ["m1"]


def test_a_closed_spool_in_this_process_no_longer_holds_leases(tmp_path):
    path = tmp_path / "s.db"
    a = Spool(path)
    a.append("m1", b"{}")
    a.take(10, 10_000)
    a.close()
    assert [i.message_id for i in Spool(path).take(10, 10_000)] == ["m1"]


def test_take_respects_the_byte_budget_but_always_takes_one(tmp_path):
    spool = Spool(tmp_path / "s.db")
    for i in range(3):
        spool.append(f"m{i}", b"x" * 600)
    assert len(spool.take(10, 1000)) == 1
    assert len(spool.take(10, 1)) == 1


def test_schema_version_is_checked(tmp_path):
    path = tmp_path / "s.db"
    Spool(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema 99"):
        Spool(path)


def test_spool_directory_is_created(tmp_path):
    path = tmp_path / "deep" / "dir" / "s.db"
    Spool(path).close()
    assert os.path.exists(path)


# -- one transaction (one WAL commit) per batch, not one per row ------------------------------


def _statements(spool):
    """Record the SQL the spool's connection runs (expanded, one string per statement)."""
    seen = []
    spool._conn.set_trace_callback(seen.append)
    return seen


def _one_transaction(statements, verb, rows):
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements[-1] == "COMMIT"
    body = statements[1:-1]
    assert len(body) == rows and all(s.startswith(verb) for s in body)


def test_removing_a_batch_of_100_rows_is_one_commit(tmp_path):
    spool = Spool(tmp_path / "s.db")
    for i in range(100):
        spool.append(f"m{i}", b"{}")
    items = spool.take(100, 1_000_000)
    statements = _statements(spool)
    spool.remove(items)
    _one_transaction(statements, "DELETE", 100)
    assert spool.count() == 0 and spool.approximate_count() == 0


def test_renewing_and_releasing_a_batch_are_one_commit_each(tmp_path):
    spool = Spool(tmp_path / "s.db")
    for i in range(100):
        spool.append(f"m{i}", b"{}")
    items = spool.take(100, 1_000_000)
    statements = _statements(spool)
    spool.renew(items)
    _one_transaction(statements, "UPDATE", 100)
    statements.clear()
    spool.release(items)
    _one_transaction(statements, "UPDATE", 100)
    assert all(owner is None for _, owner in rows(tmp_path / "s.db"))
    statements.clear()
    spool.remove([])
    spool.renew([])
    spool.release([])
    assert statements == []  # nothing to do: no transaction at all


def test_a_remove_that_fails_midway_deletes_nothing_and_the_spool_stays_usable(tmp_path):
    path = tmp_path / "s.db"
    spool = Spool(path)
    for i in range(10):
        spool.append(f"m{i}", b"{}")
    items = spool.take(10, 1_000_000)
    broken = Item(object(), "bad", b"{}")  # cannot be bound: fails after 10 deletes
    with pytest.raises(sqlite3.Error):
        spool.remove([*items, broken])
    assert len(rows(path)) == 10  # rolled back as a whole
    assert not spool._conn.in_transaction
    spool.remove(items[:5])
    spool.remove(items[:5])  # already gone (as when another process delivered them too)
    assert len(rows(path)) == 5
    assert spool.approximate_count() == 5  # not thrown off by the second remove
