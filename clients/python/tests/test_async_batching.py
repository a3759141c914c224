"""AsyncBatchingClient: the BatchingClient queue and sender, awaited from asyncio."""

import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport


async def test_track_flush_and_close():
    transport = RecordingTransport()
    async with tc.AsyncBatchingClient(
        "pk", base_url="http://t", transport=transport, flush_interval=60
    ) as client:
        ids = [await client.track("E", {"i": i}, external_id="u") for i in range(150)]
        assert await client.flush(timeout=10)
        assert (client.delivered, client.dropped) == (150, 0)
    assert [e["message_id"] for e in transport.events] == ids
    assert [len(b) for b in transport.bodies("/events")] == [100, 50]


async def test_other_calls_and_errors():
    transport = RecordingTransport()
    client = tc.AsyncBatchingClient("sk", base_url="http://t", transport=transport)
    await client.identify(external_id="u", traits={"firstName": "S"})
    await client.alias(anonymous_id="a", external_id="u")
    await client.register_device(device_id="d", external_id="u")
    assert (await client.upsert_users([{"external_id": "u"}])).succeeded == 1
    await client.trigger_campaign(1, external_id="u")
    transport.fail_next(409)
    with pytest.raises(tc.ConflictError):
        await client.trigger_journey(2, external_id="u")
    with pytest.raises(ValueError):
        await client.track("E")
    assert transport.bodies("/identify") == [{"external_id": "u", "data": {"first_name": "S"}}]
    await client.aclose()


async def test_drops_are_reported(tmp_path):
    seen = []
    transport = RecordingTransport()
    transport.fail_next(400)
    client = tc.AsyncBatchingClient(
        "pk",
        base_url="http://t",
        transport=transport,
        on_drop=seen.append,
        spool_path=str(tmp_path / "s.db"),
    )
    await client.track("E", external_id="u")
    assert await client.flush(timeout=10) is False
    assert [d.reason for d in seen] == [tc.DropReason.REJECTED]
    await client.aclose()
