"""Fixtures of the admin UI tests: accounts, a signed-in client, a settable clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from argon2 import PasswordHasher

from tidings.admin import passwords
from tidings.admin.app import AdminApp
from tidings.admin.web import Admin
from tidings.api.app import TidingsApp
from tidings.bootstrap import Services
from tidings.domain.auth import Role
from tidings.store.admin import AdminStore

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with small parameters: the tests sign in often on a shared 2-core machine."""
    monkeypatch.setattr(
        passwords,
        "PasswordHasher",
        lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )


def admin_of(app: TidingsApp) -> Admin:
    for route in app.fastapi.routes:
        if getattr(route, "path", None) == "/admin" and isinstance(route.app, AdminApp):  # type: ignore[attr-defined]
            return route.app.admin  # type: ignore[attr-defined]
    raise AssertionError("the admin UI is not mounted at /admin")


@dataclass
class Clock:
    now: int = 1_800_000_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


@pytest.fixture
def clock(app: TidingsApp) -> Clock:
    fake = Clock()
    admin_of(app).clock = fake
    return fake


def make_account(
    services: Services,
    email: str,
    *,
    owner: bool = False,
    roles: dict[int, Role] | None = None,
    password: str = PASSWORD,
) -> None:
    store = AdminStore(services.db.writer, services.db.reader)
    store.create_account(email, passwords.Passwords().hash(password), owner=owner, now=1)
    for project_id, role in (roles or {}).items():
        store.grant(email, project_id, role)


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    page = await client.get("/admin/login")
    match = CSRF.search(page.text)
    assert match, page.text
    return await client.post(
        "/admin/login",
        data={"csrf": match.group(1), "email": email, "password": password, **extra},
    )


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, html
    return match.group(1)


@pytest.fixture
async def new_client(app: TidingsApp) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """Another browser (cookie jar) on the same app."""
    made: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tidings.test"
        )
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
async def owner(
    services: Services, clock: Clock, new_client: Callable[[], httpx.AsyncClient]
) -> httpx.AsyncClient:
    """A browser signed in as an owner (admin of every project)."""
    make_account(services, "owner@example.com", owner=True)
    browser = new_client()
    response = await sign_in(browser, "owner@example.com")
    assert response.status_code == 303, response.text
    return browser
