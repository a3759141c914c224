"""Errors → ``application/problem+json``: the only place that knows HTTP status codes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from tidings.domain import errors as e
from tidings.log.committer import storage_full, storage_full_error

__all__ = [
    "DATABASE_UNAVAILABLE",
    "database_unavailable",
    "error_response",
    "is_database_unavailable",
    "problem_response",
    "status_of",
]

logger = logging.getLogger(__name__)

_STATUS: dict[type[e.TidingsError], int] = {
    e.InvalidRequest: 400,
    e.AuthenticationRequired: 401,
    e.PermissionDenied: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.ValidationFailed: 422,
    e.RateLimited: 429,
    e.ServiceUnavailable: 503,
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_encode = msgspec.json.Encoder().encode


def status_of(error: e.TidingsError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def problem_response(
    request_id: str,
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    errors: list[e.FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "status": "error",
        "code": code,
        "message": message,
        "error": message,
        "title": _TITLES.get(status, "Error"),
        "type": f"https://tidings.dev/errors/{code}",
        "request_id": request_id,
    }
    if param is not None:
        body["param"] = param
    if errors:
        body["errors"] = [{"param": x.param, "code": x.code, "message": x.message} for x in errors]
    return Response(
        _encode(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def error_response(request: Request, error: e.TidingsError) -> Response:
    status = status_of(error)
    headers = None
    if isinstance(error, e.RateLimited | e.ServiceUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    return problem_response(
        request_id_of(request),
        status,
        error.code,
        error.message,
        param=error.param,
        errors=error.errors,
        headers=headers,
    )


# Errors that say the database is down, unreachable, did not answer in time (a bounded
# connect or ping gave up: store/database.py), or has no connection free: the request
# may succeed later, so they are 503 with Retry-After, never 500. OperationalError also
# covers PostgreSQL's "cannot do this now" classes (out of resources, admin shutdown,
# statement cancelled) and SQLite's locked or read-only database.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,  # no pooled connection became free in time
)
DATABASE_RETRY_AFTER = 2  # seconds

_warned = {"at": float("-inf"), "since": 0}
_warn_lock = threading.Lock()


def is_database_unavailable(error: BaseException) -> bool:
    return isinstance(error, DATABASE_UNAVAILABLE)


def database_unavailable(error: BaseException) -> e.ServiceUnavailable:
    """The 503 for one of ``DATABASE_UNAVAILABLE``; logged as one warning line at most
    every 10 seconds (an outage fails every request). A full disk says so."""
    now = time.monotonic()
    with _warn_lock:
        _warned["since"] += 1
        if now - _warned["at"] < 10.0:
            return _unavailable(error)
        count, _warned["since"], _warned["at"] = _warned["since"], 0, now
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
    logger.warning(
        "database unavailable, answering 503: %s (%d such answers since this was last logged)",
        reason,
        count,
    )
    return _unavailable(error)


def _unavailable(error: BaseException) -> e.ServiceUnavailable:
    if storage_full(error):
        return storage_full_error()
    return e.ServiceUnavailable(
        "The database is unavailable; retry shortly.", retry_after=DATABASE_RETRY_AFTER
    )
