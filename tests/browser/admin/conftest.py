"""A real ``tidings serve`` and Debian's chromium, driven by Playwright (no browser download).

Skips, saying why, when chromium or Playwright is missing; fails instead when
``TIDINGS_TEST_REQUIRE_SERVICES`` is set. Chromium itself comes from the shared
fixture in tests/browser/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, create_project, run_cli

EMAIL = "owner@example.com"
PASSWORD = "a long browser password"


@pytest.fixture(scope="module")
def chromium(browser: Any) -> Any:
    """The shared chromium of tests/browser/conftest.py."""
    return browser


@dataclass
class Site:
    url: str
    project_id: int
    public_key: str
    secret_key: str

    def send(self, path: str, body: Any) -> None:
        response = httpx.post(
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.public_key}"},
            timeout=10,
        )
        assert response.status_code in (200, 202, 204), response.text

    def drained(self) -> None:
        response = httpx.post(
            f"{self.url}/api/client/users/batch",
            json=[{"external_id": "sync-marker"}],
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=30,
        )  # answers once processed: everything sent before it is applied too (one worker)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``tidings serve`` on a fresh SQLite file, with one project and one owner account."""
    database = Path(tmp_path_factory.mktemp("admin-browser")) / "tidings.db"
    project = create_project(database)
    made = run_cli(database, "admin", "create", "--email", EMAIL, TIDINGS_ADMIN_PASSWORD=PASSWORD)
    assert made.returncode == 0, made.stderr
    server = Server(database, TIDINGS_DEMO_PROJECT="false").start()
    try:
        yield Site(server.url, project["project_id"], project["public_key"], project["secret_key"])
    finally:
        server.stop()


@pytest.fixture
def page(chromium: Any, site: Site) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, site: Site, password: str = PASSWORD) -> None:
    page.goto(f"{site.url}/admin/login")
    page.fill("#f-email", EMAIL)
    page.fill("#f-password", password)
    page.click("button[type=submit]")
