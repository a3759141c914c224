"""The inbound SMS webhook: STOP and HELP from Twilio (signed) and http_sms (shared secret)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.api.test_validation import assert_problem
from tests.conftest import route_first
from tidings.api.app import TidingsApp
from tidings.api.inbound import inbound_router
from tidings.messaging.inbound import DEFAULT_HELP_TEXT, keyword_of, twilio_signature

TOKEN = "twilio-auth-token"
PROVIDERS: dict[int, tuple[int, str, Mapping[str, Any]]] = {
    1: (
        10,
        "twilio",
        {
            "account_sid": "AC1",
            "auth_token": TOKEN,
            "from": "+61400000000",
            "opt_out_text": "Shop: you're out. No more texts.",
        },
    ),
    2: (20, "http_sms", {"url": "http://127.0.0.1:9/sms", "inbound_secret": "in-secret"}),
    3: (30, "smtp", {"host": "127.0.0.1", "port": 25}),
}
BASE = "http://tidings.test"


@pytest.fixture
def stops() -> list[tuple[int, str]]:
    return []


@pytest.fixture
def inbound_app(app: TidingsApp, stops: list[tuple[int, str]]) -> TidingsApp:
    route_first(
        app,
        inbound_router(
            PROVIDERS.get,
            lambda p, phone: stops.append((p, phone)),
            public_url="https://public.example",
        ),
    )
    return app


def test_twilio_signature_matches_twilios_documented_example() -> None:
    fields = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    signature = twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", fields)
    assert signature == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", "stop"),
        (" stop. ", "stop"),
        ("Unsubscribe", "stop"),
        ("cancel", "stop"),
        ("END", "stop"),
        ("quit!", "stop"),
        ("HELP", "help"),
        ("help?", "help"),
        ("please stop", None),
        ("stopping", None),
        ("", None),
        ("Hi there", None),
    ],
)
def test_keywords_are_a_message_alone(body: str, keyword: str | None) -> None:
    found = keyword_of(body)
    assert (found.value if found else None) == keyword


def _twilio_post(
    fields: dict[str, str], *, url: str = f"{BASE}/api/inbound/sms/1", token: str = TOKEN
) -> dict[str, Any]:
    signature = twilio_signature(token, url, list(fields.items()))
    return {
        "content": urlencode(fields).encode(),
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    }


async def test_twilio_stop_unsubscribes_and_answers_twiml(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    fields = {"MessageSid": "SM1", "From": "+61400000009", "To": "+61400000000", "Body": "Stop"}
    response = await client.post("/api/inbound/sms/1", **_twilio_post(fields))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        "<Message>Shop: you're out. No more texts.</Message></Response>"
    )
    assert stops == [(10, "+61400000009")]


async def test_twilio_signed_for_the_public_url_is_accepted(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    fields = {"From": "+61400000009", "Body": "HELP"}
    signed = _twilio_post(fields, url="https://public.example/api/inbound/sms/1")
    response = await client.post("/api/inbound/sms/1", **signed)
    assert response.status_code == 200
    assert f"<Message>{DEFAULT_HELP_TEXT}</Message>" in response.text
    assert stops == []  # HELP unsubscribes nobody


async def test_twilio_other_messages_get_an_empty_answer(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    response = await client.post(
        "/api/inbound/sms/1", **_twilio_post({"From": "+6140", "Body": "thanks!"})
    )
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert stops == []


async def test_twilio_bad_or_missing_signatures_are_refused(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    fields = {"From": "+61400000009", "Body": "STOP"}
    wrong_token = _twilio_post(fields, token="not-the-token")
    assert_problem(
        await client.post("/api/inbound/sms/1", **wrong_token), 401, "authentication_required"
    )
    tampered = _twilio_post(fields)
    tampered["content"] = urlencode({"From": "+61499999999", "Body": "STOP"}).encode()
    assert_problem(
        await client.post("/api/inbound/sms/1", **tampered), 401, "authentication_required"
    )
    unsigned = _twilio_post(fields)
    del unsigned["headers"]["X-Twilio-Signature"]
    assert_problem(
        await client.post("/api/inbound/sms/1", **unsigned), 401, "authentication_required"
    )
    assert stops == []


async def test_http_sms_inbound_with_its_shared_secret(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    auth = {"Authorization": "Bearer in-secret"}
    response = await client.post(
        "/api/inbound/sms/2", json={"from": "+61400000007", "body": "QUIT"}, headers=auth
    )
    assert response.status_code == 200
    assert response.json() == {
        "reply": "You are unsubscribed and will receive no more messages from us."
    }
    assert stops == [(20, "+61400000007")]
    help_ = await client.post(
        "/api/inbound/sms/2", json={"from": "+61400000007", "body": "help"}, headers=auth
    )
    assert help_.json() == {"reply": DEFAULT_HELP_TEXT}
    other = await client.post(
        "/api/inbound/sms/2", json={"from": "+61400000007", "body": "hello"}, headers=auth
    )
    assert other.json() == {"reply": None}
    assert len(stops) == 1


async def test_http_sms_inbound_refuses_bad_secrets_and_bodies(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    body = {"from": "+61400000007", "body": "STOP"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic in-secret"}):
        response = await client.post("/api/inbound/sms/2", json=body, headers=headers)
        assert_problem(response, 401, "authentication_required")
    auth = {"Authorization": "Bearer in-secret"}
    assert_problem(
        await client.post("/api/inbound/sms/2", content=b"{", headers=auth),
        400,
        "parameter_invalid_format",
    )
    assert_problem(
        await client.post("/api/inbound/sms/2", json={"body": "STOP"}, headers=auth),
        400,
        "parameter_missing",
    )
    assert_problem(
        await client.post("/api/inbound/sms/2", json=[1], headers=auth),
        400,
        "parameter_invalid_format",
    )
    assert stops == []


async def test_unknown_providers_and_other_types_are_404(
    inbound_app: TidingsApp, client: httpx.AsyncClient
) -> None:
    for path in ("/api/inbound/sms/3", "/api/inbound/sms/99"):
        response = await client.post(path, json={"from": "+1", "body": "STOP"})
        assert_problem(response, 404, "resource_missing")
    response = await client.post("/api/inbound/sms/abc", json={"from": "+1", "body": "STOP"})
    assert_problem(response, 400, "parameter_invalid_format")


async def test_a_large_body_is_refused_before_it_is_read(
    inbound_app: TidingsApp, client: httpx.AsyncClient, stops: list[tuple[int, str]]
) -> None:
    big = b'{"from": "+61400000007", "body": "STOP", "pad": "' + b"x" * 70_000 + b'"}'
    response = await client.post(
        "/api/inbound/sms/2", content=big, headers={"Authorization": "Bearer in-secret"}
    )
    assert_problem(response, 413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"x" * 10_000

    streamed = await client.post(
        "/api/inbound/sms/2", content=chunks(), headers={"Authorization": "Bearer in-secret"}
    )
    assert_problem(streamed, 413, "payload_too_large")
    assert stops == []
