"""The ``http_sms`` provider: a generic JSON HTTP SMS API.

``data``: ``url`` (the endpoint), ``api_key?`` (secret), ``from?`` (a sender number or
id), ``headers?`` (extra headers, secret), ``inbound_secret?`` (secret; authenticates the
inbound webhook, see ``tidings.messaging.inbound``), ``timeout?``, ``max_connections?``.

Each message is one request::

    POST <data.url>
    Content-Type: application/json
    Accept: application/json
    Authorization: Bearer <data.api_key>        (only when api_key is set)

    {"to": "+61400000000", "body": "Your code is 1234", "from": "<data.from>"}
    ("from" only when set)

A 2xx answer is accepted; its JSON ``id`` (or ``message_id``) is kept as the provider's
message id. 408/425/429/5xx, timeouts and connection errors are transient (429 with its
``Retry-After``); any other answer, such as 400 for an invalid number, is permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tidings.domain.channels import DeliveryResult, Message, Outcome, TextMessage
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers._data import optional_str, required_str
from tidings.messaging.providers._http import (
    Answer,
    HttpClient,
    classify_exception,
    classify_status,
)

__all__ = ["CHANNEL", "SECRET_FIELDS", "HttpSmsProvider", "build"]

CHANNEL = "text"
SECRET_FIELDS: frozenset[str] = frozenset({"api_key", "headers", "inbound_secret"})
_encode = msgspec.json.Encoder().encode


class HttpSmsProvider:
    def __init__(
        self,
        url: str,
        *,
        client: HttpClient,
        api_key: str | None = None,
        sender: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.client = client
        self.sender = sender
        self.headers = {
            **(headers or {}),
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, TextMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="http_sms: not a text message")
        body: dict[str, str] = {"to": message.to, "body": message.body}
        if self.sender:
            body["from"] = self.sender
        try:
            answer = await self.client.request(
                "POST", self.url, body=_encode(body), headers=self.headers
            )
        except Exception as exc:  # never raise from send
            return classify_exception(exc, "http_sms")
        return classify_status(answer, "http_sms", message_id=_message_id(answer))

    async def aclose(self) -> None:
        await self.client.aclose()


def _message_id(answer: Answer) -> str | None:
    if not 200 <= answer.status < 300:
        return None
    found = answer.json()
    for name in ("id", "message_id"):
        value = found.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def build(data: Mapping[str, Any]) -> HttpSmsProvider:
    url = required_str(data, "url")
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest("data.url must be an http(s) URL.", param="data.url")
    headers = data.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise InvalidRequest("data.headers must map names to strings.", param="data.headers")
    return HttpSmsProvider(
        url,
        client=HttpClient(data),
        api_key=optional_str(data, "api_key"),
        sender=optional_str(data, "from"),
        headers={str(k): str(v) for k, v in headers.items()},
    )
