"""The admin UI's pure rules: roles per project, passwords, sign-in limits, tokens."""

from __future__ import annotations

from tidings.domain.admin import (
    Account,
    LoginLimits,
    login_wait,
    new_token,
    password_problem,
    role_in,
    same_token,
    token_hash,
)
from tidings.domain.auth import Role

MINUTE = 60_000_000


def test_owners_are_admins_everywhere_others_have_their_roles() -> None:
    owner = Account(1, "o@example.com", owner=True, roles={})
    editor = Account(2, "e@example.com", owner=False, roles={7: Role.EDITOR})
    assert role_in(owner, 123) is Role.ADMIN
    assert role_in(editor, 7) is Role.EDITOR and role_in(editor, 8) is None
    disabled = Account(3, "d@example.com", owner=True, roles={}, disabled=True)
    assert role_in(disabled, 7) is None


def test_password_rules() -> None:
    assert password_problem("short") is not None
    assert password_problem(" " * 12) == "The password must not be only spaces."
    assert password_problem("x" * 2000) is not None
    assert password_problem("a fine passphrase") is None


def test_login_wait_counts_recent_failures_per_account_and_address() -> None:
    limits = LoginLimits(per_account=3, per_address=5, window=15 * MINUTE)
    now = 100 * MINUTE
    recent = [now - 10 * MINUTE, now - 5 * MINUTE, now - MINUTE]
    assert login_wait(recent[:2], [], limits, now) == 0
    # The third failure blocks until the oldest of the three is 15 minutes old.
    assert login_wait(recent, [], limits, now) == 5 * MINUTE
    old = [now - 20 * MINUTE] * 10  # outside the window: forgotten
    assert login_wait(old + recent[:2], [], limits, now) == 0
    address = [now - m * MINUTE for m in (14, 12, 9, 3, 1)]
    assert login_wait([], address, limits, now) == MINUTE
    assert login_wait(recent, address, limits, now) == 5 * MINUTE


def test_tokens_are_random_hashed_and_compared_in_constant_time() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 43
    assert token_hash(a) != a and len(token_hash(a)) == 64
    assert same_token(a, a) and not same_token(b, a) and not same_token(None, a)
