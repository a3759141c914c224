"""The one error tree of Tidings.

Adapters translate driver and provider errors into these; only ``tidings.api.errors``
knows HTTP status codes. Each error carries a stable machine ``code`` (see the wire
contract) and a human ``message``.

    TidingsError
    ├── InvalidRequest          400  parameter_missing, parameter_invalid_*, parameter_unknown, …
    ├── ValidationFailed        422  validation_failed, with ``errors``
    ├── AuthenticationRequired  401
    ├── PermissionDenied        403
    ├── NotFound                404
    ├── Conflict                409  state_conflict, idempotency_*, resource_already_exists
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415
    ├── RateLimited             429
    └── ServiceUnavailable      503
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthenticationRequired",
    "Conflict",
    "FieldError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "TidingsError",
    "UnsupportedMediaType",
    "ValidationFailed",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of the input; ``param`` is a path such as ``[0].user.email``."""

    param: str
    code: str
    message: str


class TidingsError(Exception):
    """Base of every error Tidings raises on purpose."""

    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.errors = errors or []


class InvalidRequest(TidingsError):
    code = "parameter_invalid_format"


class ValidationFailed(TidingsError):
    code = "validation_failed"


class AuthenticationRequired(TidingsError):
    code = "authentication_required"


class PermissionDenied(TidingsError):
    code = "permission_denied"


class NotFound(TidingsError):
    code = "resource_missing"


class Conflict(TidingsError):
    code = "state_conflict"


class PayloadTooLarge(TidingsError):
    code = "payload_too_large"


class UnsupportedMediaType(TidingsError):
    code = "parameter_invalid_format"


class RateLimited(TidingsError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(TidingsError):
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
