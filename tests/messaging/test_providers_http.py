"""The HTTP provider adapters against local servers that check their exact requests."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.messaging.servers import Http2Server, HttpServer, Recorded, Reply
from tidings.domain.channels import Outcome, PushMessage, TextMessage, WebhookMessage
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers import build_adapter
from tidings.messaging.providers.apns import build as build_apns
from tidings.messaging.providers.fcm import SCOPE
from tidings.messaging.providers.fcm import build as build_fcm
from tidings.messaging.providers.secrets import MASK, keep_secrets, mask_secrets, secret_fields

SMS = TextMessage(to="+61400000001", body="Your code is 1234")


def _json_reply(status: int, body: Any, **headers: str) -> Reply:
    return Reply(status, {"content-type": "application/json", **headers}, json.dumps(body).encode())


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return int(port)


# -- http_sms ---------------------------------------------------------------------------------


async def test_http_sms_sends_the_documented_request() -> None:
    async with HttpServer(lambda r: _json_reply(200, {"id": "msg_1"})) as server:
        adapter = build_adapter(
            "http_sms",
            {"url": f"{server.url}/v1/sms", "api_key": "key_123", "from": "Tidings"},
        )
        result = await adapter.send(SMS)
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert result.provider_message_id == "msg_1"
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers["authorization"] == "Bearer key_123"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert json.loads(request.body) == {
        "to": "+61400000001",
        "body": "Your code is 1234",
        "from": "Tidings",
    }


async def test_http_sms_without_key_or_sender_sends_neither() -> None:
    async with HttpServer(lambda r: Reply(204)) as server:
        adapter = build_adapter("http_sms", {"url": f"{server.url}/sms"})
        result = await adapter.send(SMS)
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED and result.provider_message_id is None
    [request] = server.requests
    assert "authorization" not in request.headers
    assert json.loads(request.body) == {"to": "+61400000001", "body": "Your code is 1234"}


@pytest.mark.parametrize(
    ("reply", "outcome", "retry_after", "in_reason"),
    [
        (_json_reply(400, {"error": "invalid number"}), Outcome.PERMANENT, None, "invalid number"),
        (_json_reply(401, {"error": "bad key"}), Outcome.PERMANENT, None, "401"),
        (
            _json_reply(429, {"error": "slow down"}, **{"retry-after": "7"}),
            Outcome.TRANSIENT,
            7.0,
            "429",
        ),
        (_json_reply(503, {"error": "maintenance"}), Outcome.TRANSIENT, None, "503"),
        (Reply(500, {}, b""), Outcome.TRANSIENT, None, "500"),
    ],
)
async def test_http_sms_classifies_answers(
    reply: Reply, outcome: Outcome, retry_after: float | None, in_reason: str
) -> None:
    async with HttpServer(lambda r: reply) as server:
        adapter = build_adapter("http_sms", {"url": f"{server.url}/sms"})
        result = await adapter.send(SMS)
        await adapter.aclose()
    assert result.outcome is outcome
    assert result.retry_after == retry_after
    assert result.reason is not None and in_reason in result.reason


async def test_connection_refused_and_timeouts_are_transient() -> None:
    port = await _closed_port()
    adapter = build_adapter("http_sms", {"url": f"http://127.0.0.1:{port}/sms"})
    refused = await adapter.send(SMS)
    await adapter.aclose()
    assert refused.outcome is Outcome.TRANSIENT and "Connect" in (refused.reason or "")

    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()  # reads the request, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    adapter = build_adapter("http_sms", {"url": f"http://127.0.0.1:{port}/sms", "timeout": 0.2})
    timed_out = await adapter.send(SMS)
    await adapter.aclose()
    hold.set()
    server.close()
    await server.wait_closed()
    assert timed_out.outcome is Outcome.TRANSIENT and "timed out" in (timed_out.reason or "")


async def test_an_adapter_keeps_its_connections_open() -> None:
    async with HttpServer(lambda r: _json_reply(200, {"id": "x"})) as server:
        adapter = build_adapter("http_sms", {"url": f"{server.url}/sms", "max_connections": 4})
        for _ in range(10):
            assert (await adapter.send(SMS)).outcome is Outcome.ACCEPTED
        assert server.connections == 1
        results = await asyncio.gather(*(adapter.send(SMS) for _ in range(40)))
        await adapter.aclose()
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert len(server.requests) == 50
    assert server.connections <= 4


def test_bad_provider_data_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as missing:
        build_adapter("http_sms", {})
    assert missing.value.param == "data.url"
    with pytest.raises(InvalidRequest) as scheme:
        build_adapter("http_sms", {"url": "ftp://example.com"})
    assert scheme.value.param == "data.url"
    with pytest.raises(InvalidRequest) as twilio:
        build_adapter("twilio", {"account_sid": "AC1", "auth_token": "t"})
    assert twilio.value.param == "data.from"
    with pytest.raises(InvalidRequest) as fcm:
        build_adapter("fcm", {"project_id": "p"})
    assert fcm.value.param == "data.service_account"
    with pytest.raises(InvalidRequest) as apns:
        build_adapter("apns", {"team_id": "T", "key_id": "K", "bundle_id": "b"})
    assert apns.value.param == "data.private_key"


async def test_an_adapter_refuses_a_message_of_another_channel() -> None:
    adapter = build_adapter("http_sms", {"url": "http://127.0.0.1:9/sms"})
    result = await adapter.send(WebhookMessage(method="POST", url="http://127.0.0.1:9/"))
    await adapter.aclose()
    assert result.outcome is Outcome.PERMANENT


# -- twilio -----------------------------------------------------------------------------------


async def test_twilio_sends_its_messages_api_request() -> None:
    async with HttpServer(
        lambda r: _json_reply(201, {"sid": "SM123", "status": "queued"})
    ) as server:
        adapter = build_adapter(
            "twilio",
            {
                "account_sid": "AC0123",
                "auth_token": "secret-token",
                "from": "+61400000000",
                "base_url": server.url,
            },
        )
        result = await adapter.send(SMS)
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED and result.provider_message_id == "SM123"
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/2010-04-01/Accounts/AC0123/Messages.json"
    expected_auth = base64.b64encode(b"AC0123:secret-token").decode()
    assert request.headers["authorization"] == f"Basic {expected_auth}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode(), strict_parsing=True) == {
        "To": ["+61400000001"],
        "Body": ["Your code is 1234"],
        "From": ["+61400000000"],
    }


async def test_twilio_with_a_messaging_service() -> None:
    async with HttpServer(lambda r: _json_reply(201, {"sid": "SM9"})) as server:
        adapter = build_adapter(
            "twilio",
            {
                "account_sid": "AC1",
                "auth_token": "t",
                "messaging_service_sid": "MG42",
                "base_url": server.url,
            },
        )
        await adapter.send(SMS)
        await adapter.aclose()
    fields = parse_qs(server.requests[0].body.decode())
    assert fields["MessagingServiceSid"] == ["MG42"] and "From" not in fields


@pytest.mark.parametrize(
    ("reply", "outcome", "in_reason"),
    [
        (
            _json_reply(
                400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
            ),
            Outcome.PERMANENT,
            "21211 Invalid 'To' Phone Number",
        ),
        (
            _json_reply(
                400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
            ),
            Outcome.PERMANENT,
            "21610",
        ),
        (
            _json_reply(429, {"code": 20429, "message": "Too Many Requests"}),
            Outcome.TRANSIENT,
            "20429",
        ),
        (_json_reply(503, {"message": "Service unavailable"}), Outcome.TRANSIENT, "503"),
    ],
)
async def test_twilio_classifies_answers(reply: Reply, outcome: Outcome, in_reason: str) -> None:
    async with HttpServer(lambda r: reply) as server:
        adapter = build_adapter(
            "twilio",
            {"account_sid": "AC1", "auth_token": "t", "from": "+1", "base_url": server.url},
        )
        result = await adapter.send(SMS)
        await adapter.aclose()
    assert result.outcome is outcome
    assert in_reason in (result.reason or "")


# -- fcm --------------------------------------------------------------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
PUSH = PushMessage(
    token="device-token-1",
    os="android",
    title="Your order shipped",
    body="It arrives Tuesday",
    url="https://shop.example/orders/1",
    custom={"order_id": "o1", "items": 3},
)


class FakeGoogle:
    """The token endpoint and FCM's send endpoint, checking what arrives."""

    def __init__(self) -> None:
        self.tokens_issued = 0
        self.send_replies: list[Reply] = []  # answered in turn; then 200
        self.server = HttpServer(self.answer)

    def answer(self, request: Recorded) -> Reply:
        if request.path == "/token":
            assert request.method == "POST"
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            form = parse_qs(request.body.decode(), strict_parsing=True)
            assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            claims = jwt.decode(
                form["assertion"][0],
                RSA_KEY.public_key(),
                algorithms=["RS256"],
                audience=f"{self.server.url}/token",
                options={"verify_exp": False, "verify_iat": False},
            )
            assert claims["iss"] == "push@proj.iam.gserviceaccount.com"
            assert claims["scope"] == SCOPE
            assert claims["exp"] - claims["iat"] == 3600
            self.tokens_issued += 1
            return _json_reply(
                200,
                {
                    "access_token": f"ya29.t{self.tokens_issued}",
                    "expires_in": 3599,
                    "token_type": "Bearer",
                },
            )
        if self.send_replies:
            return self.send_replies.pop(0)
        return _json_reply(200, {"name": "projects/proj-1/messages/0:123"})


def _fcm_data(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "project_id": "proj-1",
        "service_account": {
            "type": "service_account",
            "client_email": "push@proj.iam.gserviceaccount.com",
            "private_key": RSA_PEM,
        },
        "base_url": url,
        "token_url": f"{url}/token",
        **extra,
    }


async def test_fcm_exchanges_a_signed_assertion_then_sends() -> None:
    google = FakeGoogle()
    async with google.server as server:
        adapter = build_adapter("fcm", _fcm_data(server.url))
        results = [await adapter.send(PUSH) for _ in range(3)]
        await adapter.aclose()
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert results[0].provider_message_id == "projects/proj-1/messages/0:123"
    assert google.tokens_issued == 1  # reused until it expires
    token_request, *sends = server.requests
    assert token_request.path == "/token"
    assert len(sends) == 3
    send = sends[0]
    assert (send.method, send.path) == ("POST", "/v1/projects/proj-1/messages:send")
    assert send.headers["authorization"] == "Bearer ya29.t1"
    assert send.headers["content-type"] == "application/json; charset=UTF-8"
    assert json.loads(send.body) == {
        "message": {
            "token": "device-token-1",
            "notification": {"title": "Your order shipped", "body": "It arrives Tuesday"},
            "data": {"order_id": "o1", "items": "3", "url": "https://shop.example/orders/1"},
        }
    }


async def test_fcm_fetches_a_new_token_when_it_expires_or_is_refused() -> None:
    google = FakeGoogle()
    now = [1_000_000.0]
    async with google.server as server:
        adapter = build_fcm(_fcm_data(server.url), clock=lambda: now[0])
        await adapter.send(PUSH)
        now[0] += 3599 - 61  # still fresh: a minute of margin
        await adapter.send(PUSH)
        assert google.tokens_issued == 1
        now[0] += 2
        await adapter.send(PUSH)
        assert google.tokens_issued == 2
        google.send_replies.append(
            _json_reply(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        )
        result = await adapter.send(PUSH)
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED
    assert google.tokens_issued == 3
    assert server.requests[-1].headers["authorization"] == "Bearer ya29.t3"


@pytest.mark.parametrize(
    ("reply", "outcome", "in_reason"),
    [
        (
            _json_reply(
                404,
                {
                    "error": {
                        "code": 404,
                        "message": "Requested entity was not found.",
                        "status": "NOT_FOUND",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": "UNREGISTERED",
                            }
                        ],
                    }
                },
            ),
            Outcome.PERMANENT,
            "UNREGISTERED",
        ),
        (
            _json_reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}),
            Outcome.PERMANENT,
            "INVALID_ARGUMENT",
        ),
        (
            _json_reply(
                429,
                {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}},
                **{"retry-after": "30"},
            ),
            Outcome.TRANSIENT,
            "RESOURCE_EXHAUSTED",
        ),
        (
            _json_reply(503, {"error": {"code": 503, "status": "UNAVAILABLE"}}),
            Outcome.TRANSIENT,
            "UNAVAILABLE",
        ),
    ],
)
async def test_fcm_classifies_answers(reply: Reply, outcome: Outcome, in_reason: str) -> None:
    google = FakeGoogle()
    google.send_replies.append(reply)
    async with google.server as server:
        adapter = build_adapter("fcm", _fcm_data(server.url))
        result = await adapter.send(PUSH)
        await adapter.aclose()
    assert result.outcome is outcome
    assert in_reason in (result.reason or "")
    if outcome is Outcome.TRANSIENT and "RESOURCE" in in_reason:
        assert result.retry_after == 30.0


async def test_fcm_token_refused_fails_the_send_permanently() -> None:
    refusing = HttpServer(lambda r: _json_reply(400, {"error": "invalid_grant"}))
    async with refusing as server:
        adapter = build_adapter("fcm", _fcm_data(server.url))
        result = await adapter.send(PUSH)
        await adapter.aclose()
    assert result.outcome is Outcome.PERMANENT
    assert "token exchange" in (result.reason or "") and "invalid_grant" in (result.reason or "")
    assert [r.path for r in server.requests] == ["/token"]


# -- apns -------------------------------------------------------------------------------------

EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PEM = EC_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _apns_data(url: str) -> dict[str, Any]:
    return {
        "team_id": "TEAM123456",
        "key_id": "KEY7654321",
        "private_key": EC_PEM,
        "bundle_id": "com.example.shop",
        "base_url": url,
    }


def _check_apns(request: Recorded) -> dict[str, Any]:
    assert request.http_version == "2"
    assert request.method == "POST"
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY7654321", "typ": "JWT"}
    claims = jwt.decode(
        token, EC_KEY.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims["iss"] == "TEAM123456"
    assert request.headers["apns-topic"] == "com.example.shop"
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    return claims


async def test_apns_sends_over_http2_with_a_provider_token() -> None:
    async with Http2Server(
        lambda r: Reply(200, {"apns-id": "EC1BF194-B3B2-4D7E-9B1A-3A2C2F3F4A5B"})
    ) as server:
        adapter = build_adapter("apns", _apns_data(server.url))
        results = [await adapter.send(PUSH) for _ in range(3)]
        await adapter.aclose()
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert results[0].provider_message_id == "EC1BF194-B3B2-4D7E-9B1A-3A2C2F3F4A5B"
    assert server.connections == 1
    request = server.requests[0]
    assert request.path == "/3/device/device-token-1"
    _check_apns(request)
    assert json.loads(request.body) == {
        "aps": {"alert": {"title": "Your order shipped", "body": "It arrives Tuesday"}},
        "url": "https://shop.example/orders/1",
        "order_id": "o1",
        "items": 3,
    }
    assert len({r.headers["authorization"] for r in server.requests}) == 1  # one token, reused


async def test_apns_makes_a_new_token_when_old_or_expired() -> None:
    replies = [Reply(403, {}, b'{"reason": "ExpiredProviderToken"}')]

    def answer(request: Recorded) -> Reply:
        _check_apns(request)
        return replies.pop(0) if replies else Reply(200, {"apns-id": "id"})

    now = [2_000_000.0]
    async with Http2Server(answer) as server:
        adapter = build_apns(_apns_data(server.url), clock=lambda: now[0])
        await adapter.send(PUSH)  # refused once as expired: a new token, then accepted
        now[0] += 50 * 60 + 1
        await adapter.send(PUSH)
        await adapter.aclose()
    iats = [
        jwt.decode(r.headers["authorization"].split()[1], options={"verify_signature": False})[
            "iat"
        ]
        for r in server.requests
    ]
    assert iats == [2_000_000, 2_000_000, 2_000_000 + 50 * 60 + 1]
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (400, "BadDeviceToken", Outcome.PERMANENT),
        (410, "Unregistered", Outcome.PERMANENT),
        (429, "TooManyRequests", Outcome.TRANSIENT),
        (503, "ServiceUnavailable", Outcome.TRANSIENT),
    ],
)
async def test_apns_classifies_answers(status: int, reason: str, outcome: Outcome) -> None:
    body = json.dumps({"reason": reason}).encode()
    async with Http2Server(lambda r: Reply(status, {}, body)) as server:
        adapter = build_adapter("apns", _apns_data(server.url))
        result = await adapter.send(PUSH)
        await adapter.aclose()
    assert result.outcome is outcome
    assert result.reason == f"apns: HTTP {status}: {reason}"


# -- webhook ----------------------------------------------------------------------------------


async def test_webhook_sends_the_rendered_request() -> None:
    async with HttpServer(lambda r: Reply(202)) as server:
        adapter = build_adapter(
            "webhook",
            {"headers": {"Authorization": "Bearer hook", "X-Env": "a"}},
            allow_private=True,  # the server is on 127.0.0.1
        )
        result = await adapter.send(
            WebhookMessage(
                method="put",
                url=f"{server.url}/hooks/order?id=7",
                headers={"Content-Type": "application/json", "X-Env": "b"},
                body='{"order": 7}',
            )
        )
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [request] = server.requests
    assert (request.method, request.path) == ("PUT", "/hooks/order?id=7")
    assert request.headers["authorization"] == "Bearer hook"
    assert request.headers["x-env"] == "b"  # the message's own header wins
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"order": 7}'


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (Reply(302, {"location": "http://127.0.0.1:1/elsewhere"}), Outcome.PERMANENT),
        (Reply(404), Outcome.PERMANENT),
        (Reply(429, {"retry-after": "3"}), Outcome.TRANSIENT),
        (Reply(502), Outcome.TRANSIENT),
    ],
)
async def test_webhook_classifies_answers(reply: Reply, outcome: Outcome) -> None:
    async with HttpServer(lambda r: reply) as server:
        adapter = build_adapter("webhook", {}, allow_private=True)
        result = await adapter.send(WebhookMessage(method="POST", url=f"{server.url}/h"))
        await adapter.aclose()
    assert result.outcome is outcome
    assert len(server.requests) == 1  # a redirect is not followed


async def test_webhook_refuses_other_schemes_without_a_request() -> None:
    adapter = build_adapter("webhook", {})
    result = await adapter.send(WebhookMessage(method="GET", url="file:///etc/passwd"))
    await adapter.aclose()
    assert result.outcome is Outcome.PERMANENT


# -- secrets ----------------------------------------------------------------------------------


def test_secret_fields_are_listed_per_type_and_masked() -> None:
    assert secret_fields("smtp") == {"password"}
    assert secret_fields("twilio") == {"auth_token"}
    assert secret_fields("http_sms") == {"api_key", "headers", "inbound_secret"}
    assert secret_fields("fcm") == {"service_account"}
    assert secret_fields("apns") == {"private_key"}
    assert secret_fields("webhook") == {"headers"}
    assert secret_fields("logger") == frozenset()
    stored = {"account_sid": "AC1", "auth_token": "real", "from": "+1"}
    assert mask_secrets("twilio", stored) == {
        "account_sid": "AC1",
        "auth_token": MASK,
        "from": "+1",
    }
    patch = {"account_sid": "AC2", "auth_token": MASK, "from": "+2"}
    assert keep_secrets("twilio", stored, patch) == {
        "account_sid": "AC2",
        "auth_token": "real",
        "from": "+2",
    }


# The first loop's connections are collected after asyncio.run closed that loop (as in a
# worker that dropped its loop): their transports complain that the loop is closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_adapter_keeps_working_from_another_event_loop() -> None:
    """A worker that restarts its loop keeps its adapters: each loop gets its own pool."""
    import threading

    loop = asyncio.new_event_loop()
    server = HttpServer(lambda r: _json_reply(200, {"id": "x"}))
    loop.run_until_complete(server.__aenter__())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        adapter = build_adapter("http_sms", {"url": f"{server.url}/sms"})
        push = build_adapter("fcm", _fcm_data(server.url))
        for _ in range(2):
            assert asyncio.run(adapter.send(SMS)).outcome is Outcome.ACCEPTED
        # FCM's token endpoint here is the same fake: any 200 answer with a token.
        server.responder = lambda r: (
            _json_reply(200, {"access_token": "t", "expires_in": 3600})
            if r.path == "/token"
            else _json_reply(200, {"name": "n"})
        )
        for _ in range(2):
            assert asyncio.run(push.send(PUSH)).outcome is Outcome.ACCEPTED
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        gc.collect()  # the first loops' leftovers, here rather than at exit


async def test_webhook_adds_no_content_type_of_its_own() -> None:
    async with HttpServer(lambda r: Reply(200)) as server:
        adapter = build_adapter("webhook", {}, allow_private=True)
        result = await adapter.send(
            WebhookMessage(method="POST", url=f"{server.url}/h", body="a=1")
        )
        await adapter.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [request] = server.requests
    assert "content-type" not in request.headers
    assert request.body == b"a=1"
