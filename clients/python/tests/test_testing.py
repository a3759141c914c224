"""RecordingTransport answers like a healthy server and records what was sent."""

import httpx
import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport, problem_response


def test_default_answers_and_recording():
    transport = RecordingTransport()
    client = tc.Client("sk", base_url="http://t", transport=transport)
    client.track("A", external_id="u")
    client.identify(external_id="u")
    assert client.upsert_users([{"external_id": "u"}]).succeeded == 1
    client.trigger_campaign(1, external_id="u")
    assert [r.url.path for r in transport.requests] == [
        "/api/client/events",
        "/api/client/identify",
        "/api/client/users/batch",
        "/api/client/campaigns/1/trigger",
    ]
    assert transport.events[0]["name"] == "A"
    assert transport.bodies("/identify") == [{"external_id": "u"}]
    transport.clear()
    assert transport.requests == []


def test_unknown_routes_answer_404():
    transport = RecordingTransport()
    response = httpx.Client(transport=transport).get("http://t/api/client/nothing")
    assert response.status_code == 404
    assert response.json()["code"] == "resource_missing"


def test_scripted_failures_then_handler_then_default():
    transport = RecordingTransport(
        lambda request: httpx.Response(202) if request.url.path.endswith("alias") else None
    )
    transport.fail_next(409, problem_response(413, "payload_too_large", "big"))
    client = tc.Client("sk", base_url="http://t", transport=transport)
    with pytest.raises(tc.ConflictError):
        client.track("A", external_id="u")
    with pytest.raises(tc.PayloadTooLargeError):
        client.track("A", external_id="u")
    client.alias(anonymous_id="a", external_id="u")  # 202 from the handler
    client.track("A", external_id="u")  # default 204


async def test_works_with_the_async_client():
    transport = RecordingTransport()
    transport.fail_next(httpx.ConnectError("down"))
    client = tc.AsyncClient("sk", base_url="http://t", transport=transport)
    with pytest.raises(tc.TidingsConnectionError):
        await client.track("A", external_id="u")
    await client.track("A", external_id="u")
    assert len(transport.events) == 2
