"""The ``webhook`` provider: sends the rendered request (method, URL, headers, body) as is.

``data``: ``headers?`` (sent with every request, under the message's own; secret, since it
usually carries an ``Authorization``), ``timeout?`` (seconds, 10), ``max_connections?``.
A 2xx answer is accepted; 408/425/429/5xx, timeouts and connection errors are transient;
any other answer (including a redirect, which is not followed) is permanent.

Unless the operator allows it (``TIDINGS_WEBHOOK_ALLOW_PRIVATE=1``), a request never goes
to a loopback, private, link-local (cloud metadata) or otherwise non-global address
(domain/addresses.py): an IP literal or ``localhost`` is refused before any request, and a
host name is refused when any address it resolves to is one, checked as the connection
is made. A refusal is a permanent failure naming the address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.domain.addresses import blocked_url_reason
from tidings.domain.channels import DeliveryResult, Message, Outcome, WebhookMessage
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers._addresses import blocked_in, refusal
from tidings.messaging.providers._http import HttpClient, classify_exception, classify_status

__all__ = ["CHANNEL", "GUARDS_ADDRESSES", "SECRET_FIELDS", "WebhookProvider", "build"]

CHANNEL = "webhook"
SECRET_FIELDS: frozenset[str] = frozenset({"headers"})
GUARDS_ADDRESSES = True  # build() takes allow_private (providers/__init__.py)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class WebhookProvider:
    def __init__(self, headers: Mapping[str, str], client: HttpClient) -> None:
        self.headers = dict(headers)
        self.client = client

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, WebhookMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="webhook: not a webhook message")
        method = message.method.upper()
        if method not in _METHODS:
            return DeliveryResult(Outcome.PERMANENT, reason=f"webhook: method {method!r}")
        if not message.url.startswith(("http://", "https://")):
            return DeliveryResult(Outcome.PERMANENT, reason="webhook: the URL is not http(s)")
        if self.client.guard:
            why = blocked_url_reason(message.url)
            if why is not None:
                return DeliveryResult(Outcome.PERMANENT, reason=refusal(why))
        headers = {**self.headers, **message.headers}
        try:
            answer = await self.client.request(
                method,
                message.url,
                headers=headers,
                body=message.body.encode() if message.body is not None else None,
            )
        except Exception as exc:  # never raise from send
            blocked = blocked_in(exc)
            if blocked is not None:
                return DeliveryResult(Outcome.PERMANENT, reason=refusal(str(blocked)))
            return classify_exception(exc, "webhook")
        return classify_status(answer, "webhook")

    async def aclose(self) -> None:
        await self.client.aclose()


def build(data: Mapping[str, Any], *, allow_private: bool = False) -> WebhookProvider:
    headers = data.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidRequest("data.headers must map names to strings.", param="data.headers")
    return WebhookProvider(headers, HttpClient(data, guard=not allow_private))
