"""The ``apns`` provider: Apple Push Notification service, HTTP/2 with a provider token.

``data``: ``team_id``, ``key_id``, ``private_key`` (secret: the ``.p8`` key's PEM text),
``bundle_id`` (the ``apns-topic``), ``sandbox?`` (false: ``https://api.push.apple.com``;
true: ``https://api.sandbox.push.apple.com``), ``base_url?`` (overrides both),
``timeout?``, ``max_connections?``.

HTTP/2 through httpx with the ``h2`` package (``httpx[http2]``); a plain ``http://``
base URL speaks HTTP/2 with prior knowledge (the tests' local server). The provider token
is a JWT signed ES256 (header ``kid``: the key id; claims ``iss``: the team id, ``iat``),
made again every 50 minutes (Apple refuses tokens older than an hour, and new ones more
often than every 20 minutes). Each message is::

    POST <base_url>/3/device/<device token>
    authorization: bearer <provider token>
    apns-topic: <bundle_id>
    apns-push-type: alert
    apns-priority: 10
    {"aps": {"alert": {"title": …, "body": …}}, "url": …, <custom keys>}

A 200 is accepted (the ``apns-id`` header is the message id). 403
``ExpiredProviderToken`` makes a new token and tries once more; 429 and 5xx are
transient; ``BadDeviceToken`` (400), ``Unregistered`` (410) and any other 4xx are
permanent, with Apple's ``reason``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
import msgspec

from tidings.domain.channels import DeliveryResult, Message, Outcome, PushMessage
from tidings.messaging.providers._data import optional_str, required_str
from tidings.messaging.providers._http import Answer, classify_exception, classify_status

__all__ = [
    "CHANNEL",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "SECRET_FIELDS",
    "TOKEN_LIFETIME",
    "ApnsProvider",
    "build",
]

CHANNEL = "push"
SECRET_FIELDS: frozenset[str] = frozenset({"private_key"})
PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_LIFETIME = 50 * 60.0
_encode = msgspec.json.Encoder().encode


class ApnsProvider:
    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str,
        bundle_id: str,
        client: httpx.AsyncClient,
        make_client: Callable[[], httpx.AsyncClient] | None = None,
        base_url: str = PRODUCTION_URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.team_id = team_id
        self.key_id = key_id
        self.private_key = private_key
        self.bundle_id = bundle_id
        self.client = client
        self._make_client = make_client or (lambda: client)
        self.clock = clock
        self._token: str | None = None
        self._made_at = 0.0
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _provider_token(self, *, stale: str | None = None) -> str:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the lock and the connections belong to one loop
            if self._loop is not None:
                self.client = self._make_client()
            self._loop, self._lock = loop, asyncio.Lock()
        async with self._lock:
            now = self.clock()
            fresh = now - self._made_at < TOKEN_LIFETIME
            if self._token is not None and self._token != stale and fresh:
                return self._token
            self._token = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.private_key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._made_at = now
            return self._token

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, PushMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="apns: not a push message")
        payload: dict[str, Any] = {
            **message.custom,
            "aps": {"alert": {"title": message.title, "body": message.body}},
        }
        if message.url:
            payload["url"] = message.url
        body = _encode(payload)
        url = f"{self.base_url}/3/device/{message.token}"
        try:
            token = await self._provider_token()
            response = await self._post(url, body, token)
            if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
                token = await self._provider_token(stale=token)
                response = await self._post(url, body, token)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            return DeliveryResult(Outcome.TRANSIENT, reason=f"apns: {type(exc).__name__}: {exc}")
        except Exception as exc:  # never raise from send
            return classify_exception(exc, "apns")
        answer = Answer(response.status_code, response.headers, response.content)
        result = classify_status(answer, "apns", message_id=response.headers.get("apns-id"))
        if result.outcome is Outcome.ACCEPTED:
            return result
        reason = _reason(response)
        if reason:
            return DeliveryResult(
                result.outcome,
                reason=f"apns: HTTP {response.status_code}: {reason}",
                retry_after=result.retry_after,
            )
        return result

    async def _post(self, url: str, body: bytes, token: str) -> httpx.Response:
        return await self.client.post(
            url,
            content=body,
            headers={
                "authorization": f"bearer {token}",
                "apns-topic": self.bundle_id,
                "apns-push-type": "alert",
                "apns-priority": "10",
                "content-type": "application/json",
            },
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def _reason(response: httpx.Response) -> str | None:
    try:
        answer = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None
    reason = answer.get("reason") if isinstance(answer, dict) else None
    return reason if isinstance(reason, str) else None


def _http2_client(data: Mapping[str, Any]) -> httpx.AsyncClient:
    """HTTP/2 only (APNs speaks nothing else): ``data.timeout`` (10 s),
    ``data.max_connections`` (4: each carries many concurrent streams)."""
    timeout = float(data.get("timeout") or 10.0)
    connections = int(data.get("max_connections") or 4)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
        http1=False,
        http2=True,
        trust_env=False,
    )


def build(data: Mapping[str, Any], *, clock: Callable[[], float] = time.time) -> ApnsProvider:
    base_url = optional_str(data, "base_url") or (
        SANDBOX_URL if data.get("sandbox") is True else PRODUCTION_URL
    )
    return ApnsProvider(
        team_id=required_str(data, "team_id"),
        key_id=required_str(data, "key_id"),
        private_key=required_str(data, "private_key"),
        bundle_id=required_str(data, "bundle_id"),
        client=_http2_client(data),
        make_client=lambda: _http2_client(data),
        base_url=base_url,
        clock=clock,
    )
