"""The public tracking routes (no key; the token is the credential).

- ``GET /t/o/{token}``: the open pixel (a 1x1 GIF); appends ``email_opened``.
- ``GET /t/c/{token}``: ``302`` to the URL signed in the token, and nowhere else;
  appends ``email_clicked`` with ``data.url`` (and ``email_opened``, if the pixel was
  never loaded: a click means the message was opened).
- ``GET /unsubscribe/{token}``: a small page asking to confirm (mail scanners follow
  links: a GET never unsubscribes).
- ``POST /unsubscribe/{token}``: RFC 8058 one-click (``List-Unsubscribe=One-Click``) and
  the page's form: calls the injected ``unsubscribe``, which records the new state and
  its ``unsubscribed`` event.

Events go through the ingest log like every event, naming the user by its external id
(else its first anonymous id), each with ``data.campaign_id`` and ``journey_id``/
``step_id`` when a journey sent the message. Their message ids make repeats count once:
the first open of a send (``email_opened:<send>``: mail clients and image proxies load
the pixel again and again), the first click of each link of a send
(``email_clicked:<send>:<hash of the URL>``). A token that does not verify gets ``404``
and records nothing.
"""

from __future__ import annotations

import hashlib
import html
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tidings.api.errors import problem_response, request_id_of, status_of
from tidings.bootstrap import Services
from tidings.domain.errors import TidingsError
from tidings.domain.ingest import AppendRequest, LogEntry, partition_of
from tidings.domain.tracking import TrackingRef
from tidings.messaging.events import identity_of
from tidings.messaging.tracking import TokenTracker

__all__ = ["PIXEL", "TrackingEvents", "Unsubscribe", "tracking_router"]

logger = logging.getLogger(__name__)

# (project_id, profile_id, subscription_id, campaign_id)
Unsubscribe = Callable[[int, str, int | None, int | None], None]

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _now() -> int:
    return time.time_ns() // 1000


class TrackingEvents:
    """Appends the events of tracked messages to the ingest log, for a known profile."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def append(
        self, ref: TrackingRef, name: str, message_id: str, extra: dict[str, Any] | None = None
    ) -> bool:
        """False when the profile has no identity left (erased or merged away)."""
        services = self.services
        identity = await run_in_threadpool(
            identity_of, services.db.reader, ref.project_id, ref.profile_id
        )
        if identity is None:
            return False
        field, value = identity
        data: dict[str, Any] = {"campaign_id": ref.campaign_id}
        if ref.journey_id is not None:
            data["journey_id"] = ref.journey_id
        if ref.step_id is not None:
            data["step_id"] = ref.step_id
        data.update(extra or {})
        payload = {field: value, "name": name, "data": data, "message_id": message_id}
        partition = partition_of(ref.project_id, value, services.log.partitions)
        entry = LogEntry(ref.project_id, "event", partition, payload, _now())
        await services.committer.append(AppendRequest([entry]))
        return True


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{html.escape(title)}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; color: #1f2328; background: #f6f8fa;
       margin: 0; display: grid; place-items: center; min-height: 100vh; }}
main {{ background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 2rem;
        max-width: 28rem; }}
h1 {{ font-size: 1.25rem; margin: 0 0 .75rem; }}
button {{ font: inherit; padding: .5rem 1rem; border-radius: 6px; border: 1px solid #1f2328;
          background: #1f2328; color: #fff; cursor: pointer; }}
</style></head>
<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>
"""
    return HTMLResponse(document, status_code=status, headers=_PAGE_HEADERS)


def _invalid_link() -> HTMLResponse:
    return _page(
        "This link is not valid",
        "<p>It may be incomplete: copy the whole link from the message.</p>",
        404,
    )


def tracking_router(
    services: Services, tracker: TokenTracker, *, unsubscribe: Unsubscribe
) -> APIRouter:
    """The public tracking and unsubscribe routes; ``unsubscribe(project_id, profile_id,
    subscription_id, campaign_id)`` records an unsubscribe (idempotent)."""
    # Links in messages, not an API: left out of the OpenAPI document (their answers are
    # a GIF, redirects and HTML pages), described in docs/api.md.
    router = APIRouter(tags=["tracking"], include_in_schema=False)
    events = TrackingEvents(services)

    async def record(ref: TrackingRef, name: str, message_id: str, **extra: Any) -> None:
        try:
            await events.append(ref, name, message_id, extra)
        except Exception:  # the reader still gets the pixel or the redirect
            logger.warning("could not record %s for send %s", name, ref.send_id, exc_info=True)

    @router.get(
        "/t/o/{token}",
        summary="Open pixel (records email_opened)",
        response_class=Response,
        responses={200: {"content": {"image/gif": {}}}, 404: {"description": "Not a valid token"}},
    )
    async def opened(token: str, request: Request) -> Response:
        ref = tracker.read_open(token)
        if ref is None:
            return problem_response(
                request_id_of(request), 404, "resource_missing", "Not a valid tracking link."
            )
        await record(ref, "email_opened", f"email_opened:{ref.send_id}")
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    @router.get(
        "/t/c/{token}",
        summary="Click redirect (records email_clicked; only to the signed URL)",
        response_class=Response,
        responses={302: {"description": "To the signed URL"}, 404: {"description": "Invalid"}},
    )
    async def clicked(token: str) -> Response:
        found = tracker.read_click(token)
        if found is None:
            return _invalid_link()
        ref, url = found
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        # A click is an open too (mail clients that block images never load the pixel);
        # the open's message id keeps it to one per send either way.
        await record(ref, "email_opened", f"email_opened:{ref.send_id}")
        await record(ref, "email_clicked", f"email_clicked:{ref.send_id}:{digest}", url=url)
        return RedirectResponse(
            url, status_code=302, headers={**_NO_STORE, "Referrer-Policy": "no-referrer"}
        )

    @router.get(
        "/unsubscribe/{token}",
        summary="Unsubscribe confirmation page",
        response_class=HTMLResponse,
    )
    async def confirm(token: str) -> Response:
        if tracker.read_unsubscribe(token) is None:
            return _invalid_link()
        return _page(
            "Unsubscribe",
            "<p>Stop receiving these messages?</p>"
            '<form method="post">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    @router.post(
        "/unsubscribe/{token}",
        summary="Unsubscribe (RFC 8058 one-click, and the confirmation form)",
        response_class=HTMLResponse,
    )
    async def unsubscribe_now(token: str) -> Response:
        ref = tracker.read_unsubscribe(token)
        if ref is None:
            return _invalid_link()
        try:
            await run_in_threadpool(
                unsubscribe, ref.project_id, ref.profile_id, ref.subscription_id, ref.campaign_id
            )
        except TidingsError as error:
            return _page(
                "Something went wrong", f"<p>{html.escape(error.message)}</p>", status_of(error)
            )
        return _page("You are unsubscribed", "<p>You will not receive these messages again.</p>")

    return router
