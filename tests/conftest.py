"""Shared fixtures: a migrated SQLite database, running services, an in-process client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidings.api.app import TidingsApp, create_app
from tidings.bootstrap import Services, build, ensure_schema
from tidings.domain.auth import Role, Scope
from tidings.settings import Settings

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contract" / "spotzee-sdk-requests.json"


@dataclass
class Project:
    id: int
    pk: str
    sk: str


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'tidings.db'}",
        "key_cache_ttl": 0,
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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


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
