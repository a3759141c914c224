"""Shared fixtures: a migrated database, running services, an in-process client.

Every test that takes the ``settings`` fixture (and so ``services``, ``client``, …) runs
twice: on SQLite, and on PostgreSQL when ``TIDINGS_TEST_POSTGRES_URL`` names a server
(one database for the session, migrated once, its tables emptied before each test).
Without that variable the PostgreSQL runs skip with the reason; with
``TIDINGS_TEST_REQUIRE_SERVICES`` set they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tidings.api.app import TidingsApp, create_app
from tidings.bootstrap import Services, build, ensure_schema
from tidings.domain.auth import Role, Scope
from tidings.settings import Settings
from tidings.store import migrate
from tidings.store.database import open_database

# The requests Spotzee's SDKs send (a copy kept with the tests: nothing reads outside the
# repository, so that a fresh clone passes its own tests).
CONTRACT = Path(__file__).resolve().parent / "fixtures" / "spotzee-sdk-requests.json"


@dataclass
class Project:
    id: int
    pk: str
    sk: str


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'tidings.db'}",
        "key_cache_ttl": 0,
        # A loaded test machine can take seconds to answer one read; the outage tests set
        # their own short timeout.
        "key_lookup_timeout": 30.0,
        "sqlite_synchronous": "NORMAL",
        "demo_project": False,
    }
    values.update(overrides)
    return Settings(**values)


def make_services(settings: Settings) -> Services:
    services = build(settings)
    ensure_schema(services.db, auto_migrate=True)
    return services


def create_project(services: Services, *, locale: str | None = "en-AU") -> Project:
    project = services.projects.create_project("Test", locale=locale, timezone="Australia/Sydney")
    pk = services.projects.create_key(project.id, Scope.PUBLIC).key
    sk = services.projects.create_key(project.id, Scope.SECRET, role=Role.ADMIN).key
    return Project(id=project.id, pk=pk, sk=sk)


POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
REQUIRE_SERVICES = bool(os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"))


def postgres_url_or_skip() -> str:
    if not POSTGRES_URL:
        if REQUIRE_SERVICES:
            pytest.fail("TIDINGS_TEST_REQUIRE_SERVICES is set but TIDINGS_TEST_POSTGRES_URL is not")
        pytest.skip("TIDINGS_TEST_POSTGRES_URL is not set: PostgreSQL runs are skipped")
    return POSTGRES_URL


def _admin_engine(url: str) -> sa.Engine:
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated database on the configured server, dropped after the session."""
    base = postgres_url_or_skip()
    name = f"tidings_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = str(sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False))
    db = open_database(url)
    try:
        migrate.upgrade(db.writer)
    finally:
        db.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def empty_postgres(url: str) -> None:
    """Empty every table (and restart its ids) so that a test starts from nothing.

    Only the tables holding rows are truncated (a TRUNCATE costs milliseconds per table
    even when empty, and most tests touch a few of the schema's tables); every sequence
    restarts, also those of tables emptied by the test itself."""
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            names = [
                name
                for (name,) in conn.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            ]
            if names:
                probe = " UNION ALL ".join(
                    f"SELECT '{n}' WHERE EXISTS (SELECT 1 FROM \"{n}\")" for n in names
                )
                full = [name for (name,) in conn.exec_driver_sql(probe)]
                if full:
                    quoted = ", ".join(f'"{n}"' for n in full)
                    conn.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
            conn.exec_driver_sql(
                "SELECT setval(c.oid, 1, false) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND n.nspname = 'public'"
            )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per test process: each test gets a copy of the file
    (half a second of migrations saved per test; the copy is what a fresh start makes)."""
    path = tmp_path_factory.mktemp("migrated") / "tidings.db"
    db = open_database(f"sqlite:///{path}")
    try:
        migrate.upgrade(db.writer)
    finally:
        db.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # everything into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return path


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        target = tmp_path / "tidings.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), target)
        return f"sqlite:///{target}"
    url = str(request.getfixturevalue("postgres_database"))
    empty_postgres(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = make_services(settings)
    services.start()
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture
def project(services: Services) -> Project:
    return create_project(services)


@pytest.fixture
def app(services: Services) -> TidingsApp:
    return create_app(services, manage_lifecycle=False)


@pytest.fixture
async def client(app: TidingsApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def drain(services: Services, timeout: float = 20.0) -> None:
    """Wait until the consumer has processed everything appended so far."""
    deadline = time.monotonic() + timeout
    while services.log.pending() > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"the log did not drain: {services.log.pending()} pending")
        if services.consumer is not None:
            services.consumer.wake.set()
        await asyncio.sleep(0.01)


def route_first(app: TidingsApp, router: Any) -> None:
    """Put ``router``'s routes ahead of the app's own: a test of one router, built with its
    own doubles, answers instead of the same routes the app wired to the real services."""
    app.fastapi.router.routes[:0] = router.routes
