"""API keys: scopes, roles and the authorisation rule."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from tidings.domain.errors import AuthenticationRequired, PermissionDenied

__all__ = ["ApiKey", "Role", "Scope", "authorize", "generate_key", "hash_key"]


class Scope(StrEnum):
    PUBLIC = "public"
    SECRET = "secret"  # noqa: S105 - a scope name, not a password


class Role(IntEnum):
    SUPPORT = 1
    EDITOR = 2
    PUBLISHER = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {name!r}: one of support, editor, publisher, admin"
            ) from None


PREFIX = {Scope.PUBLIC: "pk_", Scope.SECRET: "sk_"}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    project_id: int
    scope: Scope
    role: Role | None
    revoked: bool


def generate_key(scope: Scope) -> str:
    return PREFIX[scope] + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Keys carry 256 bits of entropy, so one SHA-256 is a sufficient one-way hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def authorize(key: ApiKey | None, *, secret: bool, role: Role | None = None) -> ApiKey:
    """The key if it may call an endpoint needing ``secret`` scope and at least ``role``."""
    if key is None or key.revoked:
        raise AuthenticationRequired("A valid API key is required: Authorization: Bearer <key>.")
    if secret and key.scope is not Scope.SECRET:
        raise AuthenticationRequired("This endpoint needs a secret key (sk_…).")
    if role is not None and key.scope is Scope.SECRET and (key.role or Role.SUPPORT) < role:
        raise PermissionDenied(f"This endpoint needs a key with the {role.name.lower()} role.")
    return key
