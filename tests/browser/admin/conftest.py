"""A real ``tidings serve`` and Debian's chromium, driven by Playwright (no browser download).

Skips, saying why, when chromium or Playwright is missing; fails instead when
``TIDINGS_TEST_REQUIRE_SERVICES`` is set. (A shared chromium fixture for every browser
test is coming in tests/browser/conftest.py; this one is the admin UI's own until then.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, create_project, run_cli

CHROMIUM = os.environ.get("TIDINGS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL = "owner@example.com"
PASSWORD = "a long browser password"


def _unavailable(reason: str) -> None:
    if os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"TIDINGS_TEST_REQUIRE_SERVICES is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


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
