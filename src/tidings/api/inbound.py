"""``POST /api/inbound/sms/{provider_id}``: replies to our text messages (no API key; the
provider's signature or shared secret is the credential).

- ``twilio``: Twilio's form fields (``From``, ``Body``, …), signed with
  ``X-Twilio-Signature`` under the provider's auth token (checked against the URL under
  ``TIDINGS_PUBLIC_URL``, and the URL as the request reached us). Answers TwiML.
- ``http_sms``: ``{"from": "+61…", "body": "STOP", "to"?: "…"}`` with
  ``Authorization: Bearer <data.inbound_secret>``. Answers ``{"reply": "…"|null}``; the
  provider (or whatever relays for it) sends the reply.

STOP, UNSUBSCRIBE, CANCEL, END, QUIT call ``on_stop(project_id, phone)`` and reply with
the opt-out text; HELP replies with the help text; anything else gets no reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

import msgspec
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tidings.api.bodies import read_limited
from tidings.domain.errors import AuthenticationRequired, InvalidRequest, NotFound
from tidings.messaging.inbound import (
    DEFAULT_HELP_TEXT,
    DEFAULT_OPT_OUT_TEXT,
    Keyword,
    keyword_of,
    secret_matches,
    twilio_signature,
    twiml,
)

__all__ = ["ProviderLookup", "StopCallback", "inbound_router"]

# provider_id -> (project_id, type, data) or None
ProviderLookup = Callable[[int], tuple[int, str, Mapping[str, Any]] | None]
StopCallback = Callable[[int, str], object]  # (project_id, phone); its answer is ignored
MAX_BODY = 64 * 1024
_encode = msgspec.json.Encoder().encode


def _problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "TwiML for Twilio; {reply} for http_sms",
        "content": {
            "application/xml": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"reply": {"type": ["string", "null"]}},
                    "required": ["reply"],
                }
            },
        },
    },
    400: _problem("A body that is not the provider's form or JSON"),
    401: _problem("A missing or wrong X-Twilio-Signature, or inbound secret"),
    404: _problem("No twilio or http_sms provider with this id"),
    413: _problem("A body over 64 KB"),
}


def _text(data: Mapping[str, Any], name: str, default: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) and value.strip() else default


def inbound_router(
    provider: ProviderLookup, on_stop: StopCallback, *, public_url: str | None = None
) -> APIRouter:
    router = APIRouter(tags=["inbound"])
    base = public_url.rstrip("/") if public_url else None

    @router.post(
        "/api/inbound/sms/{provider_id}",
        summary="Inbound SMS webhook (Twilio form, or http_sms JSON): STOP and HELP",
        response_class=Response,
        responses=RESPONSES,
    )
    async def inbound_sms(
        provider_id: Annotated[str, Path(pattern=r"^[0-9]{1,18}$")], request: Request
    ) -> Response:
        missing = NotFound(f"No SMS provider {provider_id[:40]} takes inbound messages here.")
        if not provider_id.isdigit() or len(provider_id) > 18:
            raise missing
        found = await run_in_threadpool(provider, int(provider_id))
        if found is None or found[1] not in ("twilio", "http_sms"):
            raise missing
        project_id, kind, data = found
        raw = await read_limited(request, MAX_BODY)
        if kind == "twilio":
            phone, body = _twilio(request, raw, data, base)
        else:
            phone, body = _http_sms(request, raw, data)
        keyword = keyword_of(body)
        reply: str | None = None
        if keyword is Keyword.STOP:
            await run_in_threadpool(on_stop, project_id, phone)
            reply = _text(data, "opt_out_text", DEFAULT_OPT_OUT_TEXT)
        elif keyword is Keyword.HELP:
            reply = _text(data, "help_text", DEFAULT_HELP_TEXT)
        if kind == "twilio":
            return Response(twiml(reply), media_type="application/xml")
        return Response(_encode({"reply": reply}), media_type="application/json")

    return router


def _twilio(
    request: Request, raw: bytes, data: Mapping[str, Any], base: str | None
) -> tuple[str, str]:
    token = data.get("auth_token")
    signature = request.headers.get("x-twilio-signature")
    if not isinstance(token, str) or not token or not signature:
        raise AuthenticationRequired("A valid X-Twilio-Signature is required.")
    try:
        fields = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("Expected Twilio's form fields.", param="body") from None
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    urls = [str(request.url)] + ([base + path] if base else [])
    if not any(secret_matches(twilio_signature(token, url, fields), signature) for url in urls):
        raise AuthenticationRequired("A valid X-Twilio-Signature is required.")
    form = dict(fields)
    phone = form.get("From", "").strip()
    if not phone:
        raise InvalidRequest("From is required.", code="parameter_missing", param="From")
    return phone, form.get("Body", "")


def _http_sms(request: Request, raw: bytes, data: Mapping[str, Any]) -> tuple[str, str]:
    secret = data.get("inbound_secret")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if (
        not isinstance(secret, str)
        or not secret
        or scheme.lower() != "bearer"
        or not secret_matches(secret, given.strip())
    ):
        raise AuthenticationRequired("Authorization: Bearer <the provider's inbound_secret>.")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InvalidRequest("The body is not valid JSON.", param="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Expected a JSON object.", param="body")
    phone, text = body.get("from"), body.get("body", "")
    if not isinstance(phone, str) or not phone.strip():
        raise InvalidRequest("from is required.", code="parameter_missing", param="from")
    if not isinstance(text, str):
        raise InvalidRequest("body must be a string.", param="body")
    return phone.strip(), text
