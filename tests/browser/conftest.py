"""Shared fixtures of the real-browser tests: Debian's Chromium driven by Playwright.

- ``browser`` (session): headless Chromium (``/usr/bin/chromium``, or
  ``TIDINGS_TEST_CHROMIUM``), launched by Playwright from PyPI; Playwright never
  downloads a browser of its own. Host names other than ``localhost`` do not resolve in
  it, so no page can reach beyond this machine.
- ``page`` (per test): a fresh context (no cookies or storage from other tests) and a
  page in it. ``page.requests`` (a list) collects the URL of every request it sends,
  ``page.console`` every console message, for assertions and failure messages.
- ``site`` (per test): a static web server on its own loopback port, so a page loaded
  from it is on another origin than the Tidings server: ``site.add(path, body)``,
  ``site.url``. ``make_site()`` gives more (another origin each).
- ``npm_packages`` (session): the front-end packages of ``tests/browser/package.json``,
  installed from the npm registry into ``.cache/browser-npm`` (outside git, never
  committed) on first use; the path of their ``node_modules``.

Chromium, Playwright or npm missing: the tests are skipped, saying why, unless
``TIDINGS_TEST_REQUIRE_SERVICES`` is set (as in CI), where they fail instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    # Nothing but this machine: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
NPM_CACHE = ROOT / ".cache" / "browser-npm"
PACKAGE_JSON = Path(__file__).with_name("package.json")


def unavailable(reason: str) -> None:
    """Skip (fail where services are required) because the browser setup is missing."""
    if os.environ.get("TIDINGS_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"TIDINGS_TEST_REQUIRE_SERVICES is set but {reason}")
    pytest.skip(reason)


# Per module, not per session: a Playwright sync API left running would refuse to start
# again in the next browser module ("Sync API inside the asyncio loop"), and keeps its own
# event loop around while the rest of the suite runs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.requests = []
    page.console = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


class StaticSite:
    """Files served from memory on 127.0.0.1 and a free port: a web page's origin."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                content_type, body = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, body: str | bytes, content_type: str = "text/html") -> str:
        """Serve ``body`` at ``path``; the full URL."""
        data = body.encode() if isinstance(body, str) else body
        self.files[path] = (f"{content_type}; charset=utf-8", data)
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_site() -> Iterator[Callable[[], StaticSite]]:
    sites: list[StaticSite] = []

    def make() -> StaticSite:
        sites.append(StaticSite())
        return sites[-1]

    try:
        yield make
    finally:
        for site in sites:
            site.close()


@pytest.fixture
def site(make_site: Callable[[], StaticSite]) -> StaticSite:
    return make_site()


@pytest.fixture(scope="session")
def npm_packages() -> Path:
    """``node_modules`` with the packages of tests/browser/package.json, installed once."""
    wanted = json.loads(PACKAGE_JSON.read_text())["dependencies"]
    modules = NPM_CACHE / "node_modules"
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    # Test processes run in parallel (pytest-xdist): one installs, the others wait for it.
    with open(NPM_CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install(wanted, modules)
    return modules


def _install(wanted: dict[str, str], modules: Path) -> None:
    if not all(_installed(modules, name) == version for name, version in wanted.items()):
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed (apt-get install npm)")
        shutil.copy(PACKAGE_JSON, NPM_CACHE / "package.json")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock"],
            cwd=NPM_CACHE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            unavailable(f"npm install failed in {NPM_CACHE}: {result.stderr[-2000:]}")


def _installed(modules: Path, name: str) -> str | None:
    manifest = modules / name / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text()).get("version"))
