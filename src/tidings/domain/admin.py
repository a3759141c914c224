"""The admin UI's rules: who may do what in a project, passwords, sessions, sign-in limits.

Pure: the store keeps accounts, sessions and failed sign-ins; the web layer asks these
functions what to do with them (``now`` is always a parameter, in microseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from tidings.domain.auth import Role

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "SESSION_LIFETIME",
    "Account",
    "LoginLimits",
    "login_wait",
    "new_token",
    "password_problem",
    "role_in",
    "same_token",
    "token_hash",
]

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 would hash more, but nobody types that much
SESSION_LIFETIME = 12 * 3600 * 1_000_000  # a working day; then sign in again


@dataclass(frozen=True, slots=True)
class Account:
    """Someone who signs in to the admin UI. ``owner`` accounts are admins of every
    project, present and future; others have the roles ``roles`` gives, by project id."""

    id: int
    email: str
    owner: bool
    roles: Mapping[int, Role]
    disabled: bool = False


def role_in(account: Account, project_id: int) -> Role | None:
    """The account's role in the project, or None when it has no access to it."""
    if account.disabled:
        return None
    if account.owner:
        return Role.ADMIN
    return account.roles.get(project_id)


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"The password must have at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"The password must have at most {MAX_PASSWORD_LENGTH} characters."
    if not password.strip():
        return "The password must not be only spaces."
    return None


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """At most ``per_account`` failed sign-ins for one email and ``per_address`` from one
    client address within ``window`` microseconds; then sign-ins wait until the oldest
    failure in the window has aged out (the password is not even checked meanwhile)."""

    per_account: int = 5
    per_address: int = 50
    window: int = 15 * 60 * 1_000_000


def login_wait(
    account_failures: list[int], address_failures: list[int], limits: LoginLimits, now: int
) -> int:
    """Microseconds until another sign-in may be tried (0: now), given the times of the
    recent failures for the account and for the client address."""
    wait = 0
    for failures, allowed in (
        (account_failures, limits.per_account),
        (address_failures, limits.per_address),
    ):
        recent = sorted(t for t in failures if t > now - limits.window)
        if len(recent) >= allowed:
            # The failure that must age out before the count drops below the limit.
            oldest_that_counts = recent[len(recent) - allowed]
            wait = max(wait, oldest_that_counts + limits.window - now)
    return wait


def new_token() -> str:
    """A random token for a session cookie or a CSRF token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Session tokens are stored hashed: a leaked table does not sign anybody in."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
