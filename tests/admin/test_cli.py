"""`tidings admin create | grant | password`, as a person at a terminal runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.admin.passwords import Passwords
from tidings.cli import app
from tidings.domain.auth import Role
from tidings.store import migrate
from tidings.store.admin import AdminStore
from tidings.store.database import open_database
from tidings.store.projects import ProjectStore


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("TIDINGS_ADMIN_PASSWORD", "TIDINGS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = open_database(url)
    migrate.upgrade(db.writer)
    ProjectStore(db.writer, db.reader).create_project("Shop", locale=None, timezone=None)
    db.dispose()
    return url


def _run(database: str, *args: str, password: str | None = None, typed: str | None = None):  # type: ignore[no-untyped-def]
    env = {"TIDINGS_ADMIN_PASSWORD": password} if password is not None else {}
    return CliRunner().invoke(app, [*args, "--database-url", database], env=env, input=typed)


def _store(database: str) -> AdminStore:
    db = open_database(database)
    return AdminStore(db.writer, db.reader)


def test_create_takes_the_password_from_the_environment(database: str) -> None:
    made = _run(
        database, "admin", "create", "--email", "Ops@Example.com", password="a good passphrase"
    )
    assert made.exit_code == 0, made.output
    assert "ops@example.com: owner" in made.output
    store = _store(database)
    found = store.credentials("ops@example.com")
    assert found is not None and Passwords().verify(found[1], "a good passphrase")
    again = _run(
        database, "admin", "create", "--email", "ops@example.com", password="a good passphrase"
    )
    assert again.exit_code == 1 and "exists already" in again.output


def test_create_refuses_short_passwords_and_bad_emails(database: str) -> None:
    short = _run(database, "admin", "create", "--email", "a@example.com", password="short")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    bad = _run(database, "admin", "create", "--email", "not-an-email", password="long enough pw")
    assert bad.exit_code == 1 and "not a valid email address" in bad.output
    assert _store(database).count_accounts() == 0


def test_without_the_variable_and_a_terminal_it_says_what_to_do(database: str) -> None:
    made = _run(database, "admin", "create", "--email", "a@example.com", typed="x\n")
    assert made.exit_code == 1 and "TIDINGS_ADMIN_PASSWORD" in made.output


def test_grant_gives_and_takes_a_role_in_a_project(database: str) -> None:
    _run(
        database,
        "admin",
        "create",
        "--email",
        "ed@example.com",
        "--no-owner",
        password="long enough pw",
    )
    granted = _run(
        database,
        "admin",
        "grant",
        "--email",
        "ed@example.com",
        "--project",
        "1",
        "--role",
        "editor",
    )
    assert granted.exit_code == 0, granted.output
    store = _store(database)
    account_id = store.credentials("ed@example.com")
    assert account_id is not None
    token = "t" * 20
    store.create_session(account_id[0], token, "csrf", now=1, expires_at=10)
    session = store.session(token, now=2)
    assert session is not None and dict(session.account.roles) == {1: Role.EDITOR}
    assert not session.account.owner
    removed = _run(
        database, "admin", "grant", "--email", "ed@example.com", "--project", "1", "--role", "none"
    )
    assert removed.exit_code == 0
    again = store.session(token, now=2)
    assert again is not None and dict(again.account.roles) == {}
    missing = _run(
        database,
        "admin",
        "grant",
        "--email",
        "ed@example.com",
        "--project",
        "9",
        "--role",
        "editor",
    )
    assert missing.exit_code == 1 and "No project 9" in missing.output
    nobody = _run(
        database, "admin", "grant", "--email", "x@example.com", "--project", "1", "--role", "editor"
    )
    assert nobody.exit_code == 1 and "No account for x@example.com" in nobody.output


def test_a_new_password_signs_the_account_out_everywhere(database: str) -> None:
    _run(database, "admin", "create", "--email", "a@example.com", password="first passphrase")
    store = _store(database)
    found = store.credentials("a@example.com")
    assert found is not None
    store.create_session(found[0], "hash-of-a-token", "csrf", now=1, expires_at=10)
    changed = _run(
        database, "admin", "password", "--email", "a@example.com", password="second passphrase"
    )
    assert changed.exit_code == 0, changed.output
    assert store.session("hash-of-a-token", now=2) is None
    renewed = store.credentials("a@example.com")
    assert renewed is not None and Passwords().verify(renewed[1], "second passphrase")


def test_serve_says_how_to_make_the_first_account(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tidings import cli

    db = open_database(database)
    try:
        cli._admin_hint(db)
        assert "tidings admin create --email" in capsys.readouterr().err
        _run(database, "admin", "create", "--email", "a@example.com", password="long enough pw")
        cli._admin_hint(db)
        assert capsys.readouterr().err == ""
    finally:
        db.dispose()
