"""Values returned by calls that answer with data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import FieldError
from ._http import field_errors

__all__ = ["ItemError", "UpsertResult", "UserResult"]


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one item of a batch was refused; ``code`` is a wire-contract code."""

    code: str | None
    message: str
    param: str | None = None
    errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True, slots=True)
class UserResult:
    """The outcome for one item of ``upsert_users``, at ``index`` in the request."""

    index: int
    external_id: str | None = None
    anonymous_id: str | None = None
    user: Mapping[str, Any] | None = None
    error: ItemError | None = None

    @property
    def ok(self) -> bool:
        """True when this item was stored."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """The answer of ``upsert_users``: one result per item, in request order."""

    results: list[UserResult] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0

    @classmethod
    def from_json(cls, body: Any) -> UpsertResult:
        """Read the server's ``{results, succeeded, failed}``, tolerating missing fields."""
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        results = []
        for position, raw in enumerate(fields.get("results") or []):
            if not isinstance(raw, Mapping):
                continue
            err = raw.get("error")
            error = None
            if isinstance(err, Mapping):
                error = ItemError(
                    code=err.get("code"),
                    message=str(err.get("message") or ""),
                    param=err.get("param"),
                    errors=tuple(field_errors(err.get("errors"))),
                )
            elif isinstance(err, str):
                error = ItemError(code=None, message=err)
            user = raw.get("user")
            results.append(
                UserResult(
                    index=int(raw.get("index", position)),
                    external_id=raw.get("external_id"),
                    anonymous_id=raw.get("anonymous_id"),
                    user=user if isinstance(user, Mapping) else None,
                    error=error,
                )
            )
        failed = sum(1 for r in results if not r.ok)
        return cls(
            results=results,
            succeeded=int(fields.get("succeeded", len(results) - failed)),
            failed=int(fields.get("failed", failed)),
        )
