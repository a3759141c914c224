"""AsyncClient sends what Client sends, awaited."""

import json

import httpx
import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport


@pytest.fixture
def transport():
    return RecordingTransport()


async def test_every_call_sends_the_same_requests_as_the_sync_client(transport):
    sync_transport = RecordingTransport()
    sync = tc.Client("sk", base_url="http://t", transport=sync_transport)
    async with tc.AsyncClient("sk", base_url="http://t", transport=transport) as client:
        for c, awaiting in ((client, True), (sync, False)):
            calls = [
                c.track("A", {"camelKey": 1}, external_id="u", message_id="m1"),
                c.identify(external_id="u", traits={"firstName": "S"}),
                c.alias(anonymous_id="a", external_id="u"),
                c.register_device(device_id="d", external_id="u", os="ios"),
                c.upsert_users([{"external_id": "u"}]),
                c.trigger_campaign(1, external_id="u"),
                c.trigger_journey(2, external_id="u", event={"x": 1}),
            ]
            if awaiting:
                for call in calls:
                    await call
    sent = [(r.method, r.url.path, r.content) for r in transport.requests]
    assert sent == [(r.method, r.url.path, r.content) for r in sync_transport.requests]
    assert len(sent) == 7


async def test_track_returns_the_message_id(transport):
    client = tc.AsyncClient("sk", base_url="http://t", transport=transport)
    mid = await client.track("A", anonymous_id="a")
    assert json.loads(transport.requests[0].content)[0]["message_id"] == mid


async def test_upsert_users_result(transport):
    client = tc.AsyncClient("sk", base_url="http://t", transport=transport)
    result = await client.upsert_users([{"external_id": "a"}, {"anonymous_id": "b"}])
    assert [r.index for r in result.results] == [0, 1]
    assert result.succeeded == 2


async def test_errors_and_opt_in_retries(transport):
    client = tc.AsyncClient("sk", base_url="http://t", transport=transport)
    transport.fail_next(401)
    with pytest.raises(tc.AuthenticationError):
        await client.track("A", external_id="u")

    waits = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    retrying = tc.AsyncClient(
        "sk", base_url="http://t", transport=transport, retry=tc.RetryPolicy(max_retries=2)
    )
    retrying._sleep = fake_sleep
    transport.clear()
    transport.fail_next(httpx.ConnectError("refused"), 503)
    await retrying.track("A", external_id="u")
    assert len(transport.requests) == 3 and len(waits) == 2
    assert len({r.content for r in transport.requests}) == 1


async def test_validation_happens_before_sending(transport):
    client = tc.AsyncClient("sk", base_url="http://t", transport=transport)
    with pytest.raises(ValueError):
        await client.identify()
    assert transport.requests == []
