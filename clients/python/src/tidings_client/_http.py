"""What every client shares about HTTP: URLs, headers, and turning answers into errors."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import httpx

from ._exceptions import (
    APIError,
    AuthenticationError,
    ConflictError,
    FieldError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TidingsConnectionError,
    TidingsError,
    TidingsTimeoutError,
    ValidationError,
)
from ._retry import parse_retry_after
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "connection_error",
    "error_from_response",
    "field_errors",
    "headers_for",
    "normalize_base_url",
]

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 10.0
USER_AGENT = f"tidings-client-python/{__version__}"
CLIENT_PATH = "/api/client"

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
}


def normalize_base_url(base_url: str | None) -> str:
    """The server root, from the argument or ``TIDINGS_BASE_URL``, without a trailing ``/api…``.

    A Spotzee-style base URL ending in ``/api`` or ``/api/client`` is accepted too.
    """
    url = (base_url or os.environ.get("TIDINGS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    for suffix in (CLIENT_PATH, "/api"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url + CLIENT_PATH


def headers_for(api_key: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers sent with every request."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("api_key must be a non-empty str (a pk_… or sk_… key)")
    headers = {
        "Authorization": f"Bearer {api_key.strip()}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    headers.update(extra or {})
    return headers


def _body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content) if response.content else None
    except ValueError:
        return None


def field_errors(raw: object) -> list[FieldError]:
    """The ``errors`` array of a problem body, leniently read."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, Mapping):
            out.append(
                FieldError(
                    param=_str(item.get("param")),
                    code=_str(item.get("code")),
                    message=_str(item.get("message")) or "",
                )
            )
    return out


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def error_from_response(response: httpx.Response) -> APIError:
    """The ``TidingsError`` for a non-2xx answer, read like the reference JS SDK reads it."""
    body = _body(response)
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    status = response.status_code
    message = (
        _str(fields.get("message"))
        or _str(fields.get("error"))
        or _str(fields.get("title"))
        or response.reason_phrase
        or f"HTTP {status}"
    )
    kwargs: dict[str, Any] = {
        "status": status,
        "code": _str(fields.get("code")),
        "request_id": _str(fields.get("request_id")) or response.headers.get("x-request-id"),
        "param": _str(fields.get("param")),
        "errors": field_errors(fields.get("errors")),
        "body": body if body is not None else response.text,
        "headers": dict(response.headers),
    }
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    if cls is RateLimitedError:
        return RateLimitedError(message, retry_after=parse_retry_after(response.headers), **kwargs)
    return cls(message, **kwargs)


def connection_error(exc: httpx.HTTPError) -> TidingsError:
    """Wrap an httpx failure that came without an answer."""
    cls = TidingsTimeoutError if isinstance(exc, httpx.TimeoutException) else TidingsConnectionError
    error = cls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    error.__cause__ = exc
    return error
