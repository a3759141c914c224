"""Retries against the real server behind a proxy that fails the first requests.

The server stores an event once per message_id, so a retried batch never duplicates,
even when the first attempt did reach the server and only its answer was lost.
"""

import json
import uuid

import pytest

import tidings_client as tc

pytestmark = pytest.mark.server

NO_WAIT = tc.RetryPolicy(max_retries=5, backoff=0)


def uid():
    return f"u_{uuid.uuid4().hex[:12]}"


def test_client_retry_503_twice_then_204_stores_once(tidings_server, failing_proxy):
    proxy = failing_proxy(fail_first=2, status=503, mode="lose_ack")
    ext = uid()
    client = tc.Client(tidings_server.public_key, base_url=proxy.url, retry=NO_WAIT)
    client.track("Paid", {"amount": 10}, external_id=ext)
    assert [status for status, _ in proxy.seen] == [503, 503, 204]
    assert len(set(proxy.event_posts())) == 1  # the very same bytes each time
    events = tidings_server.wait_for_events(ext, 1)
    assert len(events) == 1  # the server saw three copies and stored one


def test_batching_client_503_twice_then_204_stores_each_event_once(tidings_server, failing_proxy):
    proxy = failing_proxy(fail_first=2, status=503, mode="lose_ack")
    ext = uid()
    client = tc.BatchingClient(
        tidings_server.public_key, base_url=proxy.url, retry=NO_WAIT, flush_interval=60
    )
    for i in range(30):
        client.track("Tick", {"i": i}, external_id=ext)
    assert client.flush(timeout=30)
    client.close()
    assert [status for status, _ in proxy.seen] == [503, 503, 204]
    assert len(set(proxy.event_posts())) == 1
    events = tidings_server.wait_for_events(ext, 30)
    assert sorted(e["data"]["i"] for e in events) == list(range(30))


def test_rate_limit_then_success(tidings_server, failing_proxy):
    proxy = failing_proxy(fail_first=1, status=429, mode="reject")
    ext = uid()
    client = tc.BatchingClient(tidings_server.public_key, base_url=proxy.url, retry=NO_WAIT)
    waits = []
    client._backoff_wait = waits.append
    client.track("Tick", external_id=ext)
    assert client.flush(timeout=30)
    client.close()
    assert [status for status, _ in proxy.seen] == [429, 204]
    assert len(waits) == 1
    assert len(tidings_server.wait_for_events(ext, 1)) == 1


def test_a_plain_client_does_not_retry_by_default(tidings_server, failing_proxy):
    proxy = failing_proxy(fail_first=1, status=503)
    client = tc.Client(tidings_server.public_key, base_url=proxy.url)
    with pytest.raises(tc.ServerError) as info:
        client.track("E", external_id=uid())
    assert info.value.code == "service_unavailable"
    assert len(proxy.seen) == 1


def test_message_ids_given_by_the_caller_make_resends_harmless(tidings_server):
    ext = uid()
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    mid = uuid.uuid4().hex
    for _ in range(3):
        client.track("Once", external_id=ext, message_id=mid)
    assert len(tidings_server.wait_for_events(ext, 1)) == 1


def test_identical_bodies_across_retries_carry_message_ids(tidings_server, failing_proxy):
    proxy = failing_proxy(fail_first=1, status=500, mode="reject")
    client = tc.Client(tidings_server.public_key, base_url=proxy.url, retry=NO_WAIT)
    mid = client.track("E", external_id=uid())
    bodies = {json.loads(body)[0]["message_id"] for body in proxy.event_posts()}
    assert bodies == {mid}
