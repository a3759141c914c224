"""The source configuration RudderStack's JavaScript SDK loads before it sends anything.

``rudderanalytics.load(writeKey, dataPlaneUrl, {configUrl})`` (``@rudderstack/analytics-js``
3.x) first reads ``{configUrl}/sourceConfig/?writeKey=…`` (also with the write key as
HTTP Basic credentials). With ``configUrl`` and ``dataPlaneUrl`` both set to the Tidings
server, this answers a source with no destinations, so the SDK loads no device-mode code
and sends its calls to ``{dataPlaneUrl}/v1/<type>`` and ``/v1/batch``: the Segment API.
See docs/browser.md.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from tidings.api.auth import KeyCache
from tidings.api.cors import check_origin, withhold_cors
from tidings.domain.auth import Scope
from tidings.domain.errors import AuthenticationRequired, NotFound, PermissionDenied

__all__ = ["PATHS", "rudderstack_config_router"]

PATHS = ("/sourceConfig", "/sourceConfig/")

_encode = msgspec.json.Encoder().encode


def rudderstack_config_router(keys: KeyCache) -> APIRouter:
    router = APIRouter(tags=["segment"])

    async def source_config(
        request: Request,
        write_key: Annotated[
            str | None, Query(alias="writeKey", min_length=1, max_length=255)
        ] = None,
    ) -> Response:
        key = write_key or _basic_username(request.headers.get("authorization"))
        if not key:
            raise AuthenticationRequired(
                "A write key is required: ?writeKey=<public key>, or as the HTTP Basic username."
            )
        context = await keys.lookup(key.strip())
        if context is None or context.key.revoked:
            raise NotFound("No project has this write key, or it was revoked.")
        if context.key.scope is Scope.SECRET:
            withhold_cors(request.scope)
            raise PermissionDenied(
                "The source configuration is served for public keys (pk_…) only: a secret key "
                "must never be in a web page (revoke it if it was published).",
                code="secret_key_in_browser",
            )
        check_origin(request.scope, context, request.headers.get("origin"))
        project = context.project
        body = {
            "isHosted": False,
            "source": {
                "id": f"tidings-project-{project.id}",
                "name": project.name,
                "writeKey": key.strip(),
                "workspaceId": f"tidings-project-{project.id}",
                "enabled": True,
                "config": {},
                "destinations": [],
            },
        }
        return Response(
            _encode(body),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    for path in PATHS:
        router.add_api_route(
            path,
            source_config,
            methods=["GET"],
            summary="RudderStack JS SDK source configuration for a write key",
            include_in_schema=path == PATHS[1],
        )
    return router


def _basic_username(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
