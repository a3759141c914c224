"""The ``fcm`` provider: Firebase Cloud Messaging's HTTP v1 API.

``data``: ``project_id`` (Firebase's), ``service_account`` (secret: the service account's
JSON key, as an object or its text; ``client_email`` and ``private_key`` are used),
``base_url?`` (``https://fcm.googleapis.com``), ``token_url?`` (the key's ``token_uri``,
else ``https://oauth2.googleapis.com/token``), ``timeout?``, ``max_connections?``.

Access tokens come from the OAuth2 service-account flow: a JWT signed RS256 with the
key (``iss`` the client email, ``scope`` firebase.messaging, ``aud`` the token URL, one
hour) is exchanged at the token URL (``grant_type=urn:ietf:params:oauth:grant-type:
jwt-bearer``); the access token is reused until a minute before it expires, and fetched
once for all the sends waiting on it. Each message is then::

    POST <base_url>/v1/projects/<project_id>/messages:send
    Authorization: Bearer <access token>
    {"message": {"token": "<device token>", "notification": {"title": …, "body": …},
                 "data": {"url": …, <custom, values as strings>}}}

A 401 fetches a new access token and tries once more. 429 and 5xx are transient;
``UNREGISTERED`` (404) and ``INVALID_ARGUMENT`` (400), like any other 4xx, are permanent.
A token exchange refused with a 4xx (a revoked key) fails the send permanently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import msgspec

from tidings.domain.channels import DeliveryResult, Message, Outcome, PushMessage
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers._data import optional_str, required_str
from tidings.messaging.providers._http import (
    Answer,
    HttpClient,
    classify_exception,
    classify_status,
)

__all__ = [
    "CHANNEL",
    "DEFAULT_BASE_URL",
    "DEFAULT_TOKEN_URL",
    "SCOPE",
    "SECRET_FIELDS",
    "FcmProvider",
    "build",
]

CHANNEL = "push"
SECRET_FIELDS: frozenset[str] = frozenset({"service_account"})
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_encode = msgspec.json.Encoder().encode


class _TokenRefused(Exception):
    def __init__(self, result: DeliveryResult) -> None:
        self.result = result


class FcmProvider:
    def __init__(
        self,
        *,
        project_id: str,
        client_email: str,
        private_key: str,
        client: HttpClient,
        base_url: str = DEFAULT_BASE_URL,
        token_url: str = DEFAULT_TOKEN_URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.token_url = token_url
        self.client_email = client_email
        self.private_key = private_key
        self.client = client
        self.clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.token_fetches = 0

    async def _access_token(self, *, stale: str | None = None) -> str:
        """The cached access token, or a new one (``stale``: the token a 401 refused)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a lock belongs to one event loop
            self._loop, self._lock = loop, asyncio.Lock()
        async with self._lock:
            now = self.clock()
            if self._token is not None and self._token != stale and now < self._expires_at:
                return self._token
            assertion = jwt.encode(
                {
                    "iss": self.client_email,
                    "scope": SCOPE,
                    "aud": self.token_url,
                    "iat": int(now),
                    "exp": int(now) + 3600,
                },
                self.private_key,
                algorithm="RS256",
            )
            response = await self.client.request(
                "POST",
                self.token_url,
                form={"grant_type": GRANT_TYPE, "assertion": assertion},
                headers={"Accept": "application/json"},
            )
            self.token_fetches += 1
            if response.status != 200:
                result = classify_status(response, "fcm: token exchange")
                if result.outcome is Outcome.ACCEPTED:  # a 2xx other than 200
                    result = DeliveryResult(Outcome.TRANSIENT, reason="fcm: token exchange")
                raise _TokenRefused(result)
            answer = response.json()
            token = answer.get("access_token")
            if not isinstance(token, str) or not token:
                raise _TokenRefused(
                    DeliveryResult(Outcome.TRANSIENT, reason="fcm: token exchange: no access_token")
                )
            expires_in = answer.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            self._token = token
            self._expires_at = now + max(0.0, lifetime - 60.0)
            return token

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, PushMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="fcm: not a push message")
        body = _encode({"message": _fcm_message(message)})
        try:
            token = await self._access_token()
            response = await self._post(body, token)
            if response.status == 401:  # revoked or expired early: a new one, once
                token = await self._access_token(stale=token)
                response = await self._post(body, token)
        except _TokenRefused as refused:
            return refused.result
        except Exception as exc:  # never raise from send
            return classify_exception(exc, "fcm")
        result = classify_status(response, "fcm", message_id=_name(response))
        if result.outcome is Outcome.ACCEPTED:
            return result
        code = _error_code(response)
        if code:
            return DeliveryResult(
                result.outcome, reason=f"{result.reason} [{code}]", retry_after=result.retry_after
            )
        return result

    async def _post(self, body: bytes, token: str) -> Answer:
        return await self.client.request(
            "POST",
            self.url,
            body=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json; charset=UTF-8",
            },
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def _fcm_message(message: PushMessage) -> dict[str, Any]:
    data = {
        str(k): v if isinstance(v, str) else _encode(v).decode()  # FCM's data: strings only
        for k, v in message.custom.items()
    }
    if message.url:
        data["url"] = message.url
    body: dict[str, Any] = {
        "token": message.token,
        "notification": {"title": message.title, "body": message.body},
    }
    if data:
        body["data"] = data
    return body


def _name(answer: Answer) -> str | None:
    name = answer.json().get("name") if answer.status == 200 else None
    return name if isinstance(name, str) else None


def _error_code(answer: Answer) -> str | None:
    """FCM's ``errorCode`` (UNREGISTERED, …) or the error's ``status``."""
    error = answer.json().get("error")
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    status = error.get("status")
    return status if isinstance(status, str) else None


def _service_account(data: Mapping[str, Any]) -> Mapping[str, Any]:
    account = data.get("service_account")
    if isinstance(account, str):
        try:
            account = msgspec.json.decode(account)
        except msgspec.DecodeError:
            account = None
    if not isinstance(account, Mapping):
        raise InvalidRequest(
            "data.service_account is required: the service account's JSON key.",
            code="parameter_missing",
            param="data.service_account",
        )
    return account


def build(data: Mapping[str, Any], *, clock: Callable[[], float] = time.time) -> FcmProvider:
    account = _service_account(data)
    private_key = account.get("private_key")
    client_email = account.get("client_email")
    if not isinstance(private_key, str) or not isinstance(client_email, str):
        raise InvalidRequest(
            "data.service_account needs client_email and private_key.",
            param="data.service_account",
        )
    token_uri = account.get("token_uri")
    token_url = optional_str(data, "token_url") or (
        token_uri if isinstance(token_uri, str) and token_uri else DEFAULT_TOKEN_URL
    )
    return FcmProvider(
        project_id=required_str(data, "project_id"),
        client_email=client_email,
        private_key=private_key,
        client=HttpClient(data),
        base_url=optional_str(data, "base_url") or DEFAULT_BASE_URL,
        token_url=token_url,
        clock=clock,
    )
