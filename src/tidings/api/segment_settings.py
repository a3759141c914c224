"""The settings document analytics.js loads before it sends anything.

Segment's browser library (``@segment/analytics-next``) started with
``AnalyticsBrowser.load({writeKey, cdnURL})`` first reads
``{cdnURL}/v1/projects/{writeKey}/settings``. Served here, with ``cdnURL`` set to the
Tidings server, it names this server as the API host (``<host>/v1``), so the library
sends its calls (``/v1/t``, ``/v1/i``, …, or ``/v1/b`` in batching mode) to Tidings with
no other change. The document turns off the library's own metrics (``/v1/m``), and has
no device-mode destinations, middleware or plugins, so the library loads no code from
anywhere else. See docs/browser.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.auth import KeyCache
from tidings.api.cors import check_origin, withhold_cors
from tidings.domain.auth import Scope
from tidings.domain.errors import NotFound, PermissionDenied

__all__ = ["CACHE_SECONDS", "segment_settings_router"]

CACHE_SECONDS = 300  # as a CDN would keep it; a key revoked meanwhile is refused on send

_encode = msgspec.json.Encoder().encode


def segment_settings_router(keys: KeyCache) -> APIRouter:
    router = APIRouter(tags=["segment"])

    @router.get(
        "/v1/projects/{write_key}/settings",
        summary="analytics.js settings for a write key (its cdnURL is this server)",
        # Answers: api/openapi.py documents them.
    )
    async def settings(
        write_key: Annotated[str, Path(min_length=1, max_length=255)], request: Request
    ) -> Response:
        context = await keys.lookup(write_key.strip())
        if context is None or context.key.revoked:
            raise NotFound("No project has this write key, or it was revoked.")
        if context.key.scope is Scope.SECRET:
            withhold_cors(request.scope)
            raise PermissionDenied(
                "analytics.js settings are served for public keys (pk_…) only: a secret key "
                "must never be in a web page (revoke it if it was published).",
                code="secret_key_in_browser",
            )
        check_origin(request.scope, context, request.headers.get("origin"))
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        body = document(
            write_key.strip(),
            api_host=f"{host}{request.scope.get('root_path', '')}/v1",
            protocol=request.url.scheme,
        )
        return Response(
            _encode(body),
            media_type="application/json",
            headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"},
        )

    return router


def document(write_key: str, *, api_host: str, protocol: str) -> dict[str, Any]:
    """The settings of one write key: only the ``Segment.io`` destination, this server."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": "https" if protocol == "https" else "http",
                "unbundledIntegrations": [],
                "addBundledMetadata": False,
                "maybeBundledConfigIds": {},
                "versionSettings": {"componentTypes": []},
            }
        },
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
