"""Client: exact requests, argument checks, errors and opt-in retries (no network)."""

import datetime as dt
import json

import httpx
import pytest

import tidings_client as tc
from tidings_client.testing import RecordingTransport, problem_response


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def client(transport):
    with tc.Client("sk_test", base_url="http://tidings.test", transport=transport) as c:
        yield c


def only(transport):
    (request,) = transport.requests
    return request, json.loads(request.content)


def test_track_sends_one_event_with_headers_and_a_message_id(client, transport):
    mid = client.track("Order placed", {"total": 129.5}, external_id="u_42")
    request, body = only(transport)
    assert request.method == "POST"
    assert str(request.url) == "http://tidings.test/api/client/events"
    assert request.headers["Authorization"] == "Bearer sk_test"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"tidings-client-python/{tc.__version__}"
    assert body == [
        {"name": "Order placed", "external_id": "u_42", "data": {"total": 129.5}, "message_id": mid}
    ]
    assert len(mid) == 32


def test_track_matches_the_js_sdk_request_with_camel_case_properties(client, transport):
    client.track(
        "Order placed",
        {
            "orderId": "ord_2026_04_30_001",
            "total": 129.5,
            "currency": "AUD",
            "items": 3,
            "sku": ["SHIRT-AU-12", "BAG-AU-01"],
            "shippingAddress": {"postCode": "3000"},
        },
        external_id="u_42",
        user={
            "timezone": "Australia/Melbourne",
            "locale": "en-AU",
            "data": {"plan": "professional", "seatsAllocated": 5},
        },
        message_id="m-1",
    )
    _, body = only(transport)
    assert body == [
        {
            "name": "Order placed",
            "external_id": "u_42",
            "user": {
                "timezone": "Australia/Melbourne",
                "locale": "en-AU",
                "data": {"plan": "professional", "seats_allocated": 5},
            },
            "data": {
                "order_id": "ord_2026_04_30_001",
                "total": 129.5,
                "currency": "AUD",
                "items": 3,
                "sku": ["SHIRT-AU-12", "BAG-AU-01"],
                "shipping_address": {"post_code": "3000"},
            },
            "message_id": "m-1",
        }
    ]


def test_convert_keys_false_sends_keys_verbatim(transport):
    client = tc.Client("pk_x", base_url="http://t", transport=transport, convert_keys=False)
    client.track("A", {"userID": 1}, anonymous_id="a", user={"data": {"seatsAllocated": 1}})
    _, body = only(transport)
    assert body[0]["data"] == {"userID": 1}
    assert body[0]["user"] == {"data": {"seatsAllocated": 1}}


def test_track_accepts_aware_datetimes_and_rich_values(client, transport):
    when = dt.datetime(2026, 4, 30, 8, 15, tzinfo=dt.UTC)
    client.track("A", {"at": when, "day": dt.date(2026, 1, 2)}, anonymous_id="a", created_at=when)
    _, body = only(transport)
    assert body[0]["created_at"] == "2026-04-30T08:15:00+00:00"
    assert body[0]["data"] == {"at": "2026-04-30T08:15:00+00:00", "day": "2026-01-02"}


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.track("A"),
        lambda c: c.track("A", external_id="", anonymous_id=None),
        lambda c: c.track("", external_id="u"),
        lambda c: c.track("A", external_id="u", created_at=dt.datetime(2026, 1, 1)),
        lambda c: c.identify(email="x@example.com"),
        lambda c: c.alias(anonymous_id="a", external_id=""),
        lambda c: c.register_device(device_id="d"),
        lambda c: c.register_device(device_id="", external_id="u"),
        lambda c: c.upsert_users([]),
        lambda c: c.upsert_users([{"email": "x@example.com"}]),
        lambda c: c.upsert_users([{"external_id": str(i)} for i in range(101)]),
        lambda c: c.trigger_campaign(1, external_id=""),
        lambda c: c.trigger_journey("", external_id="u"),
        lambda c: c.track("A", {"nan": float("nan")}, external_id="u"),
        # An external id names the user in URLs: the server refuses these.
        lambda c: c.track("A", external_id="team/u_1"),
        lambda c: c.identify(external_id=".."),
        lambda c: c.alias(anonymous_id="a", external_id="a/b"),
        lambda c: c.register_device(device_id="d", external_id="/"),
        lambda c: c.upsert_users([{"external_id": "x/y"}]),
        lambda c: c.trigger_campaign(1, external_id="."),
    ],
)
def test_unsendable_arguments_raise_value_error_before_sending(client, transport, call):
    with pytest.raises(ValueError):
        call(client)
    assert transport.requests == []


def test_unserialisable_properties_raise_type_error_before_sending(client, transport):
    with pytest.raises(TypeError):
        client.track("A", {"x": object()}, external_id="u")
    assert transport.requests == []


def test_integer_ids_are_sent_as_strings(client, transport):
    client.track("A", external_id=42)
    _, body = only(transport)
    assert body[0]["external_id"] == "42"


def test_identify(client, transport):
    client.identify(
        external_id="u_42",
        anonymous_id="anon",
        email="sam@example.com",
        phone="+61491570006",
        timezone="Australia/Sydney",
        locale="en-AU",
        traits={"firstName": "Sam", "lifetimeValue": 199.5},
    )
    request, body = only(transport)
    assert request.url.path == "/api/client/identify"
    assert body == {
        "external_id": "u_42",
        "anonymous_id": "anon",
        "email": "sam@example.com",
        "phone": "+61491570006",
        "timezone": "Australia/Sydney",
        "locale": "en-AU",
        "data": {"first_name": "Sam", "lifetime_value": 199.5},
    }


def test_alias(client, transport):
    client.alias(anonymous_id="anon", external_id="u_42")
    request, body = only(transport)
    assert request.url.path == "/api/client/alias"
    assert body == {"anonymous_id": "anon", "external_id": "u_42"}


def test_register_device(client, transport):
    client.register_device(
        device_id="web-7c1e",
        external_id="u_42",
        token="fcm",
        os="web",
        os_version="Chrome 156",
        model="desktop",
        app_build="412",
        app_version="4.12.0",
    )
    request, body = only(transport)
    assert request.url.path == "/api/client/devices"
    assert body == {
        "external_id": "u_42",
        "device_id": "web-7c1e",
        "token": "fcm",
        "os": "web",
        "os_version": "Chrome 156",
        "model": "desktop",
        "app_build": "412",
        "app_version": "4.12.0",
    }


def test_upsert_users_returns_per_item_results(transport):
    def handler(request):
        return httpx.Response(
            200,
            json={
                "results": [
                    {"index": 0, "external_id": "a", "user": {"external_id": "a"}},
                    {
                        "index": 1,
                        "external_id": "b",
                        "error": {
                            "code": "validation_failed",
                            "message": "bad email",
                            "param": "email",
                            "errors": [
                                {
                                    "param": "email",
                                    "code": "parameter_invalid_format",
                                    "message": "m",
                                }
                            ],
                        },
                    },
                ],
                "succeeded": 1,
                "failed": 1,
            },
        )

    client = tc.Client("sk", base_url="http://t", transport=RecordingTransport(handler))
    result = client.upsert_users(
        [{"externalId": "a", "data": {"planName": "pro"}}, {"external_id": "b", "email": "bad"}]
    )
    assert (result.succeeded, result.failed) == (1, 1)
    assert [r.ok for r in result.results] == [True, False]
    assert result.results[0].user == {"external_id": "a"}
    assert result.results[1].error == tc.ItemError(
        "validation_failed",
        "bad email",
        "email",
        (tc.FieldError("email", "parameter_invalid_format", "m"),),
    )


def test_upsert_users_body_converts_keys(client, transport):
    client.upsert_users([{"externalId": "a", "data": {"planName": "pro"}}])
    request, body = only(transport)
    assert request.url.path == "/api/client/users/batch"
    assert body == [{"external_id": "a", "data": {"plan_name": "pro"}}]
    assert "Idempotency-Key" not in request.headers


@pytest.mark.parametrize("kind", ["campaign", "journey"])
def test_triggers(client, transport, kind):
    trigger = getattr(client, f"trigger_{kind}")
    trigger(
        7,
        external_id="u_42",
        email="sam@example.com",
        traits={"firstName": "Sam"},
        event={"orderId": "o1"},
        idempotency_key="order-o1",
    )
    request, body = only(transport)
    assert request.url.path == f"/api/client/{kind}s/7/trigger"
    assert request.headers["Idempotency-Key"] == "order-o1"
    assert body == {
        "user": {"external_id": "u_42", "email": "sam@example.com", "data": {"first_name": "Sam"}},
        "event": {"order_id": "o1"},
    }


def test_ids_in_paths_are_escaped(client, transport):
    client.trigger_journey("a/b", external_id="u")
    assert transport.requests[0].url.raw_path == b"/api/client/journeys/a%2Fb/trigger"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, tc.ValidationError),
        (401, tc.AuthenticationError),
        (403, tc.PermissionDeniedError),
        (404, tc.NotFoundError),
        (409, tc.ConflictError),
        (413, tc.PayloadTooLargeError),
        (422, tc.ValidationError),
        (429, tc.RateLimitedError),
        (503, tc.ServerError),
    ],
)
def test_failed_calls_raise_and_are_not_retried_by_default(client, transport, status, cls):
    transport.fail_next(status)
    with pytest.raises(cls) as info:
        client.track("A", external_id="u")
    assert info.value.status == status
    assert len(transport.requests) == 1


def test_network_errors_raise_connection_errors(client, transport):
    transport.fail_next(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    with pytest.raises(tc.TidingsConnectionError) as info:
        client.identify(external_id="u")
    assert not isinstance(info.value, tc.TidingsTimeoutError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    with pytest.raises(tc.TidingsTimeoutError):
        client.identify(external_id="u")


def test_opt_in_retries_resend_the_same_bytes_and_honour_retry_after(transport):
    client = tc.Client(
        "sk", base_url="http://t", transport=transport, retry=tc.RetryPolicy(max_retries=3)
    )
    waits = []
    client._sleep = waits.append
    transport.fail_next(
        problem_response(429, "rate_limited", "slow", headers={"Retry-After": "2"}),
        httpx.ConnectError("reset"),
        503,
    )
    client.track("A", external_id="u")
    assert len(transport.requests) == 4
    assert len({r.content for r in transport.requests}) == 1
    assert waits[0] >= 2
    assert len(waits) == 3


def test_retries_stop_at_max_retries_and_skip_client_errors(transport):
    client = tc.Client(
        "sk", base_url="http://t", transport=transport, retry=tc.RetryPolicy(max_retries=2)
    )
    client._sleep = lambda s: None
    transport.fail_next(503, 503, 503, 503)
    with pytest.raises(tc.ServerError):
        client.track("A", external_id="u")
    assert len(transport.requests) == 3
    transport.clear()
    transport.fail_next(422)
    with pytest.raises(tc.ValidationError):
        client.track("A", external_id="u")
    assert len(transport.requests) == 1


def test_retrying_clients_give_triggers_an_idempotency_key(transport):
    client = tc.Client(
        "sk", base_url="http://t", transport=transport, retry=tc.RetryPolicy(max_retries=1)
    )
    client._sleep = lambda s: None
    transport.fail_next(503)
    client.trigger_campaign(3, external_id="u")
    first, second = transport.requests
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://x.example.com", "https://x.example.com/api/client"),
        ("https://x.example.com/", "https://x.example.com/api/client"),
        ("https://x.example.com/api", "https://x.example.com/api/client"),
        ("https://x.example.com/api/client/", "https://x.example.com/api/client"),
        ("http://h:8000/prefix", "http://h:8000/prefix/api/client"),
    ],
)
def test_base_url_forms(given, expected):
    assert tc.Client("k", base_url=given).base_url == expected


def test_base_url_from_environment(monkeypatch):
    monkeypatch.setenv("TIDINGS_BASE_URL", "https://env.example.com")
    assert tc.Client("k").base_url == "https://env.example.com/api/client"


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        tc.Client("")
    with pytest.raises(ValueError):
        tc.Client("k", base_url="tidings.example.com")


def test_extra_headers(transport):
    client = tc.Client("k", base_url="http://t", transport=transport, headers={"X-Env": "test"})
    client.alias(anonymous_id="a", external_id="b")
    assert transport.requests[0].headers["X-Env"] == "test"
