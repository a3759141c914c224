"""The one exception tree of tidings_client.

Every error this package raises on purpose is a ``TidingsError``::

    TidingsError                      status, code, message, request_id
    ├── APIError                      the server answered non-2xx (+ param, errors, body, headers)
    │   ├── ValidationError           400, 422            (+ errors: list[FieldError])
    │   ├── AuthenticationError       401 authentication_required
    │   ├── PermissionDeniedError     403 permission_denied
    │   ├── NotFoundError             404 resource_missing
    │   ├── ConflictError             409 state_conflict, idempotency_*, resource_already_exists
    │   ├── PayloadTooLargeError      413 payload_too_large
    │   ├── RateLimitedError          429 rate_limited    (+ retry_after: float | None)
    │   └── ServerError               5xx internal_error, service_unavailable
    └── TidingsConnectionError        no answer: connection refused/reset, protocol error
        └── TidingsTimeoutError       no answer in time

Any other non-2xx status raises a plain ``APIError``. Arguments that can never be sent
(no id at all, a naive datetime, more than 100 users) raise ``ValueError`` before any
request is made: those are bugs in the calling code, not failures of a call.

The batching clients never raise these from their background work: they report lost
events through ``on_drop`` and the ``tidings_client`` logger instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConflictError",
    "FieldError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerError",
    "TidingsConnectionError",
    "TidingsError",
    "TidingsTimeoutError",
    "ValidationError",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field; ``param`` is a path such as ``[0].user.email``."""

    param: str | None
    code: str | None
    message: str


class TidingsError(Exception):
    """Base of every error raised by tidings_client.

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` the server's
    machine-readable code, ``request_id`` the server's ``req_…`` id to quote in a bug report.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        # Same shape as the reference JS SDK's message, so logs read alike.
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        parts.append(self.message)
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " | ".join(parts)


class APIError(TidingsError):
    """The server answered with a non-2xx status."""

    status: int

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        param: str | None = None,
        errors: list[FieldError] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.param = param
        self.errors: list[FieldError] = list(errors or [])
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})


class ValidationError(APIError):
    """400 or 422: the request was malformed or a field was invalid; see ``errors``."""


class AuthenticationError(APIError):
    """401: the key is missing, wrong, revoked, or not allowed on this endpoint."""


class PermissionDeniedError(APIError):
    """403: the key's role is too low for this call."""


class NotFoundError(APIError):
    """404: the user, campaign or journey does not exist."""


class ConflictError(APIError):
    """409: e.g. triggering a draft campaign, or an Idempotency-Key reused with another body."""


class PayloadTooLargeError(APIError):
    """413: an event over 32 KB or a request body over 1 MB."""


class RateLimitedError(APIError):
    """429: slow down; ``retry_after`` is the server's ``Retry-After`` in seconds, if given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed or is unavailable; the call may be retried."""


class TidingsConnectionError(TidingsError):
    """No answer from the server: connection refused or reset, DNS or protocol failure."""


class TidingsTimeoutError(TidingsConnectionError):
    """No answer within the client's timeout."""
