"""The ``twilio`` provider: Twilio's Messages API (and services that copy its shape).

``data``: ``account_sid``, ``auth_token`` (secret), ``from`` (a sender number) or
``messaging_service_sid``, ``base_url?`` (``https://api.twilio.com``), ``status_callback?``,
``timeout?``, ``max_connections?``. The same auth token checks the ``X-Twilio-Signature``
of inbound messages (``tidings.messaging.inbound``).

Each message is ``POST <base_url>/2010-04-01/Accounts/<account_sid>/Messages.json`` with
HTTP basic auth (account sid, auth token) and a form body ``To``, ``Body``, then ``From``
or ``MessagingServiceSid`` (and ``StatusCallback`` when set). A 2xx answer (Twilio says
201) is accepted with its ``sid``; 429 and 5xx are transient; any other answer, such as
400 with code 21211 (an invalid ``To`` number) or 21610 (the recipient replied STOP), is
permanent, its reason carrying Twilio's code and message.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from tidings.domain.channels import DeliveryResult, Message, Outcome, TextMessage
from tidings.domain.errors import InvalidRequest
from tidings.messaging.providers._data import optional_str, required_str
from tidings.messaging.providers._http import (
    HttpClient,
    classify_exception,
    classify_status,
)

__all__ = ["CHANNEL", "DEFAULT_BASE_URL", "SECRET_FIELDS", "TwilioProvider", "build"]

CHANNEL = "text"
SECRET_FIELDS: frozenset[str] = frozenset({"auth_token"})
DEFAULT_BASE_URL = "https://api.twilio.com"


class TwilioProvider:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        client: HttpClient,
        base_url: str = DEFAULT_BASE_URL,
        sender: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
        self.client = client
        self.fields: dict[str, str] = {}
        if sender:
            self.fields["From"] = sender
        else:
            self.fields["MessagingServiceSid"] = messaging_service_sid or ""
        if status_callback:
            self.fields["StatusCallback"] = status_callback

    async def send(self, message: Message) -> DeliveryResult:
        if not isinstance(message, TextMessage):
            return DeliveryResult(Outcome.PERMANENT, reason="twilio: not a text message")
        form = {"To": message.to, "Body": message.body, **self.fields}
        try:
            answer = await self.client.request("POST", self.url, form=form, headers=self.headers)
        except Exception as exc:  # never raise from send
            return classify_exception(exc, "twilio")
        found = answer.json()
        result = classify_status(answer, "twilio", message_id=_str(found.get("sid")))
        if result.outcome is not Outcome.ACCEPTED and "message" in found:
            code = found.get("code")
            reason = f"twilio: HTTP {answer.status}: " + (
                f"{code} {found['message']}" if code is not None else str(found["message"])
            )
            return DeliveryResult(result.outcome, reason=reason, retry_after=result.retry_after)
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def build(data: Mapping[str, Any]) -> TwilioProvider:
    sender = optional_str(data, "from")
    service = optional_str(data, "messaging_service_sid")
    if not sender and not service:
        raise InvalidRequest(
            "Set data.from (a sender number) or data.messaging_service_sid.",
            code="parameter_missing",
            param="data.from",
        )
    base_url = optional_str(data, "base_url") or DEFAULT_BASE_URL
    if not base_url.startswith(("http://", "https://")):
        raise InvalidRequest("data.base_url must be an http(s) URL.", param="data.base_url")
    return TwilioProvider(
        account_sid=required_str(data, "account_sid"),
        auth_token=required_str(data, "auth_token"),
        client=HttpClient(data),
        base_url=base_url,
        sender=sender,
        messaging_service_sid=service,
        status_callback=optional_str(data, "status_callback"),
    )
