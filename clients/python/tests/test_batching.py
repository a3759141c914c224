"""BatchingClient: queueing, batching, retries, drops, flush and close (no network).

Backoff waits are replaced by a recorder (``client._backoff_wait``), so nothing sleeps.
"""

import json
import logging
import threading

import httpx
import pytest

import tidings_client as tc
from tidings_client import _queue as tc_queue
from tidings_client.testing import RecordingTransport, problem_response


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def make(transport):
    clients = []

    def make(**kwargs):
        kwargs.setdefault("transport", transport)
        kwargs.setdefault("flush_interval", 60.0)  # batches leave on size or flush() only
        kwargs.setdefault("shutdown_timeout", 1.0)
        client = tc.BatchingClient("pk_test", base_url="http://t", **kwargs)
        client.waits = []
        client._backoff_wait = client.waits.append
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=1.0)


def test_track_queues_and_flush_delivers_batches_of_100(make, transport):
    client = make()
    ids = [client.track("E", {"n": i}, external_id=f"u{i % 7}") for i in range(250)]
    assert client.flush(timeout=10)
    sizes = [len(body) for body in transport.bodies("/events")]
    assert sizes == [100, 100, 50]
    assert [e["message_id"] for e in transport.events] == ids
    assert len(set(ids)) == 250
    assert (client.delivered, client.dropped, client.queued) == (250, 0, 0)


def test_flush_interval_sends_a_partial_batch_without_flush(make, transport):
    client = make(flush_interval=0.0)
    client.track("E", external_id="u")
    arrived = threading.Event()
    for _ in range(200):  # bounded: the sender should need one or two turns
        if transport.events:
            arrived.set()
            break
        arrived.wait(0.05)
    assert arrived.is_set()


def test_retries_resend_the_same_bytes_until_acknowledged(make, transport):
    client = make(retry=tc.RetryPolicy(max_retries=5))
    transport.fail_next(503, httpx.ConnectError("reset"), 408, 500)
    ids = [client.track("E", external_id="u") for _ in range(3)]
    assert client.flush(timeout=10)
    bodies = [r.content for r in transport.requests]
    assert len(bodies) == 5 and len(set(bodies)) == 1
    assert [e["message_id"] for e in transport.bodies("/events")[-1]] == ids
    assert len(client.waits) == 4


def test_backoff_honours_retry_after(make, transport):
    client = make()
    transport.fail_next(problem_response(429, "rate_limited", "slow", headers={"Retry-After": "9"}))
    client.track("E", external_id="u")
    assert client.flush(timeout=10)
    assert client.waits[0] >= 9


def test_exhausted_retries_are_dropped_loudly(make, transport, caplog):
    seen = []
    client = make(retry=tc.RetryPolicy(max_retries=2), on_drop=seen.append)
    transport.fail_next(503, 503, 503)
    mid = client.track("E", {"k": 1}, external_id="u")
    with caplog.at_level(logging.WARNING, logger="tidings_client"):
        assert client.flush(timeout=10) is False
    assert len(transport.requests) == 3
    (drop,) = seen
    assert drop.reason is tc.DropReason.RETRIES_EXHAUSTED
    assert drop.message_ids == (mid,)
    assert drop.events[0]["data"] == {"k": 1}
    assert isinstance(drop.error, tc.ServerError)
    assert client.dropped == 1
    assert "dropped 1 event(s) (retries_exhausted)" in caplog.text
    # The next flush reports on events tracked since: all delivered now.
    client.track("E", external_id="u")
    assert client.flush(timeout=10) is True


def test_a_bad_event_is_isolated_and_the_good_ones_delivered(make):
    accepted = []

    def handler(request):
        if b'"bad"' in request.content:
            return problem_response(422, "validation_failed", "bad event")
        accepted.extend(json.loads(request.content))
        return None

    seen = []
    client = make(transport=RecordingTransport(handler), on_drop=seen.append)
    for i in range(10):
        client.track("bad" if i == 6 else "ok", {"i": i}, external_id="u")
    assert client.flush(timeout=10) is False
    assert [e["data"]["i"] for e in accepted] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    (drop,) = seen
    assert drop.reason is tc.DropReason.REJECTED
    assert drop.events[0]["name"] == "bad"
    assert isinstance(drop.error, tc.ValidationError)
    assert (client.delivered, client.dropped) == (9, 1)


def test_authentication_failures_drop_without_splitting(make, transport):
    seen = []
    client = make(on_drop=seen.append)
    transport.fail_next(401)
    for _ in range(4):
        client.track("E", external_id="u")
    assert client.flush(timeout=10) is False
    assert len(transport.requests) == 1
    assert [(d.reason, len(d)) for d in seen] == [(tc.DropReason.REJECTED, 4)]


def test_a_full_queue_drops_new_events_without_blocking_or_raising(make, caplog):
    seen = []
    client = make(max_queue_size=3, on_drop=seen.append)
    with caplog.at_level(logging.WARNING, logger="tidings_client"):
        ids = [client.track("E", external_id="u") for _ in range(5)]
    assert [d.reason for d in seen] == [tc.DropReason.QUEUE_FULL] * 2
    assert [d.message_ids[0] for d in seen] == ids[3:]
    assert client.dropped == 2
    assert caplog.text.count("queue_full") == 1  # rate-limited, counts kept
    assert client.flush(timeout=10) is False  # two were dropped since the last flush


def test_on_drop_that_raises_does_not_reach_the_host(make, caplog):
    def explode(dropped):
        raise RuntimeError("boom")

    client = make(max_queue_size=1, on_drop=explode)
    client.track("E", external_id="u")
    client.track("E", external_id="u")  # dropped; callback raises; we carry on
    assert "on_drop callback raised" in caplog.text


def test_a_broken_transport_does_not_kill_the_sender(make):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transport bug")
        return None

    transport = RecordingTransport(handler)
    client = make(transport=transport)
    client.track("E", external_id="u")
    assert client.flush(timeout=10)
    assert len(transport.requests) == 2


def test_flush_never_waits_past_its_timeout(make):
    release = threading.Event()

    def hang(request):
        release.wait(30)
        return None

    client = make(transport=RecordingTransport(hang))
    client.track("E", external_id="u")
    assert client.flush(timeout=0.05) is False
    release.set()
    assert client.flush(timeout=10) is True


def test_close_drops_what_cannot_be_delivered_within_its_budget(transport):
    seen = []
    client = tc.BatchingClient(
        "pk", base_url="http://t", transport=transport, on_drop=seen.append, flush_interval=60
    )
    transport.fail_next(*[503] * 1000)
    client.track("E", external_id="u")
    client.track("E", external_id="u")
    client.close(timeout=0.2)  # the real backoff wait is cut short by the deadline
    assert sum(len(d) for d in seen) == 2
    assert {d.reason for d in seen} == {tc.DropReason.SHUTDOWN}


def test_close_delivers_queued_events_and_later_tracks_are_dropped(make, transport):
    seen = []
    client = make(on_drop=seen.append)
    client.track("E", external_id="u")
    client.close()
    assert len(transport.events) == 1
    client.track("late", external_id="u")  # must not raise
    assert [d.reason for d in seen] == [tc.DropReason.CLOSED]
    client.close()  # idempotent


def test_other_calls_are_sent_at_once_and_raise(make, transport):
    client = make()
    client.identify(external_id="u", traits={"a": 1})
    assert transport.requests[0].url.path == "/api/client/identify"
    transport.fail_next(403)
    with pytest.raises(tc.PermissionDeniedError):
        client.upsert_users([{"external_id": "u"}])


def test_arguments_are_still_checked_synchronously(make, transport):
    client = make()
    with pytest.raises(ValueError):
        client.track("E")
    assert client.queued == 0


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        tc.BatchingClient("pk", batch_size=101)
    with pytest.raises(ValueError):
        tc.BatchingClient("pk", max_queue_size=0)


# -- drops held back by the log's rate limit are logged later, never lost --------------------


def _drop_counts(records):
    """(events, reason) of every drop warning."""
    out = []
    for record in records:
        words = record.getMessage().split()
        if record.name == "tidings_client" and words[1:2] == ["dropped"]:
            out.append((int(words[2]), words[4].strip("();:")))
    return out


def test_a_burst_of_drops_is_logged_in_full_by_close(make, caplog):
    now = [1000.0]
    client = make(max_queue_size=20)  # batch_size 100, flush_interval 60: nothing leaves
    client._reporter._clock = lambda: now[0]
    with caplog.at_level(logging.WARNING, logger="tidings_client"):
        for _ in range(2000):
            client.track("E", external_id="u")
        assert _drop_counts(caplog.records) == [(1, "queue_full")]  # the rest is held back
        client.close(timeout=5)
    assert client.dropped == 1980
    assert _drop_counts(caplog.records) == [(1, "queue_full"), (1979, "queue_full")]
    assert caplog.records[-1].getMessage().endswith("; 1980 dropped in total")


def test_an_idle_sender_logs_held_back_drops_once_they_are_due(make):
    now = [1000.0]
    client = make(max_queue_size=2)
    client._reporter._clock = lambda: now[0]
    records = []
    logged = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            records.append(record)
            if len(_drop_counts(records)) == 2:
                logged.set()

    watch = Watch(logging.WARNING)
    logging.getLogger("tidings_client").addHandler(watch)
    try:
        for _ in range(50):
            client.track("E", external_id="u")
        assert client.flush(timeout=10) is False  # the 2 queued ones left; 48 dropped
        assert _drop_counts(records) == [(1, "queue_full")]
        assert client._reporter.due_in() == tc_queue.LOG_EVERY  # the idle sender waits
        now[0] += tc_queue.LOG_EVERY  # the interval is up ...
        with client._cond:
            client._cond.notify_all()  # ... as the sender's timed wait would find
        assert logged.wait(10)  # logged by the sender: no new drop, no close()
        assert _drop_counts(records) == [(1, "queue_full"), (47, "queue_full")]
        assert records[-1].threadName == "tidings-client-sender"
    finally:
        logging.getLogger("tidings_client").removeHandler(watch)


_EXIT_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
import tidings_client as tc
from tidings_client.testing import RecordingTransport

kept = tc.BatchingClient(
    "pk", base_url="http://t", transport=RecordingTransport(), max_queue_size=5,
    flush_interval=60,
)
for _ in range(50):
    kept.track("E", external_id="u")  # 45 dropped; the script never closes this client
closed = tc.BatchingClient("pk", base_url="http://t", transport=RecordingTransport())
closed.close()
for _ in range(30):
    closed.track("E", external_id="u")  # 30 dropped after close()
print("counted", kept.dropped, closed.dropped, flush=True)
"""


def test_held_back_drops_are_logged_at_interpreter_exit_even_after_close():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "tidings_client: dropped 1 event(s) (queue_full); 1 dropped in total",
        "tidings_client: dropped 1 event(s) (closed); 1 dropped in total",
        "counted 45 30",
    ]
    assert sorted(lines[3:]) == [  # at exit, in whichever order the clients are visited
        "tidings_client: dropped 29 event(s) (closed); 30 dropped in total",
        "tidings_client: dropped 44 event(s) (queue_full); 45 dropped in total",
    ]
