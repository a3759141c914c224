"""Every call against a real Tidings server."""

import uuid

import pytest

import tidings_client as tc
from helpers import wait_until

pytestmark = pytest.mark.server


def uid(prefix="u"):
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pk_client(tidings_server):
    with tc.Client(tidings_server.public_key, base_url=tidings_server.url) as client:
        yield client


@pytest.fixture
def sk_client(tidings_server):
    with tc.Client(tidings_server.secret_key, base_url=tidings_server.url) as client:
        yield client


def profile(server, external_id, predicate=lambda p: True, timeout=20.0):
    def ready():
        response = server.user(external_id)
        return response.status_code == 200 and predicate(response.json()) and response.json()

    return wait_until(ready, timeout)


def test_track_stores_the_event_with_converted_keys(tidings_server, pk_client):
    ext = uid()
    pk_client.track(
        "Order placed",
        {"orderId": "o1", "total": 129.5, "shippingAddress": {"postCode": "3000"}},
        external_id=ext,
        user={"timezone": "Australia/Melbourne", "locale": "en-AU", "data": {"planName": "pro"}},
    )
    (event,) = tidings_server.wait_for_events(ext, 1)
    assert event["name"] == "Order placed"
    assert event["external_id"] == ext
    assert event["data"] == {
        "order_id": "o1",
        "total": 129.5,
        "shipping_address": {"post_code": "3000"},
    }
    user = profile(tidings_server, ext, lambda p: p.get("timezone"))
    assert user["timezone"] == "Australia/Melbourne"
    assert user["data"]["plan_name"] == "pro"


def test_track_with_created_at(tidings_server, pk_client):
    ext = uid()
    pk_client.track("Back-dated", external_id=ext, created_at="2026-01-02T03:04:05Z")
    (event,) = tidings_server.wait_for_events(ext, 1)
    assert event["created_at"].startswith("2026-01-02T03:04:05")


def test_identify_creates_the_profile(tidings_server, pk_client):
    ext = uid()
    pk_client.identify(
        external_id=ext,
        email="sam@example.com",
        phone="+61491570006",
        timezone="Australia/Sydney",
        locale="en-AU",
        traits={"firstName": "Sam", "lifetimeValue": 199.5},
    )
    user = profile(tidings_server, ext, lambda p: p.get("email"))
    assert user["email"] == "sam@example.com"
    assert user["phone"] == "+61491570006"
    assert user["data"] == {"first_name": "Sam", "lifetime_value": 199.5}


def test_alias_moves_anonymous_history_to_the_known_user(tidings_server, pk_client):
    anon, ext = uid("anon"), uid()
    pk_client.track("Product viewed", {"sku": "A1"}, anonymous_id=anon)
    pk_client.alias(anonymous_id=anon, external_id=ext)
    pk_client.track("Order placed", external_id=ext)
    events = tidings_server.wait_for_events(ext, 2)
    assert sorted(e["name"] for e in events) == ["Order placed", "Product viewed"]


def test_register_device(tidings_server, pk_client):
    ext = uid()
    pk_client.register_device(
        device_id="dev-" + ext,
        external_id=ext,
        token="fcm-token",
        os="Android",
        os_version="15",
        model="Pixel 9",
        app_build="87",
        app_version="2.3.1",
        sdk_version="0.2.3",
    )
    user = profile(tidings_server, ext, lambda p: p.get("devices"))
    assert user, "the device never showed on the profile"
    assert [d.get("device_id") for d in user["devices"]] == ["dev-" + ext]


def test_upsert_users_returns_per_item_results(tidings_server, sk_client):
    good, bad = uid(), uid()
    result = sk_client.upsert_users(
        [
            {"externalId": good, "email": "jane@example.com", "data": {"planName": "pro"}},
            {"external_id": bad, "email": "not-an-email"},
        ]
    )
    assert (result.succeeded, result.failed) == (1, 1)
    first, second = result.results
    assert (first.index, first.external_id, first.ok) == (0, good, True)
    assert first.user["email"] == "jane@example.com"
    assert (second.index, second.ok) == (1, False)
    assert second.error.code == "validation_failed"
    assert tidings_server.user(good).json()["data"] == {"plan_name": "pro"}
    assert tidings_server.user(bad).status_code == 404


@pytest.mark.parametrize("kind", ["campaign", "journey"])
def test_triggering_an_unknown_campaign_or_journey_is_not_found(sk_client, kind):
    with pytest.raises(tc.NotFoundError) as info:
        getattr(sk_client, f"trigger_{kind}")(987654, external_id="u_1", event={"a": 1})
    assert info.value.status == 404
    assert info.value.request_id.startswith("req_")


async def test_async_client_every_ingest_call(tidings_server):
    ext, anon = uid(), uid("anon")
    async with tc.AsyncClient(tidings_server.secret_key, base_url=tidings_server.url) as client:
        await client.track("Async event", anonymous_id=anon)
        await client.identify(external_id=ext, anonymous_id=anon, email="a@example.com")
        await client.register_device(
            device_id="d-" + ext,
            external_id=ext,
            os="ios",
            model="iPhone",
            app_build="1",
            app_version="1.0",
        )
        result = await client.upsert_users([{"external_id": uid()}])
        assert result.succeeded == 1
        with pytest.raises(tc.NotFoundError):
            await client.trigger_journey(987654, external_id=ext)
    events = tidings_server.wait_for_events(ext, 1)
    assert [e["name"] for e in events] == ["Async event"]


def test_batching_client_delivers_everything_once(tidings_server):
    ext = uid()
    client = tc.BatchingClient(tidings_server.public_key, base_url=tidings_server.url)
    for i in range(250):
        client.track("Tick", {"i": i}, external_id=ext)
    assert client.flush(timeout=30)
    client.close()
    events = tidings_server.wait_for_events(ext, 250)
    assert sorted(e["data"]["i"] for e in events) == list(range(250))


def test_batching_client_isolates_a_bad_event(tidings_server):
    ext = uid()
    seen = []
    client = tc.BatchingClient(
        tidings_server.public_key,
        base_url=tidings_server.url,
        on_drop=seen.append,
        flush_interval=60,
    )
    for i in range(10):
        user = {"email": "not-an-email"} if i == 4 else None
        client.track("Tick", {"i": i}, external_id=ext, user=user)
    assert client.flush(timeout=30) is False
    client.close()
    assert [(d.reason, d.events[0]["data"]["i"]) for d in seen] == [(tc.DropReason.REJECTED, 4)]
    assert isinstance(seen[0].error, tc.ValidationError)
    events = tidings_server.wait_for_events(ext, 9)
    assert sorted(e["data"]["i"] for e in events) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
