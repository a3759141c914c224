"""Web pages on another origin send events to a real ``tidings serve`` from Chromium:
with Spotzee-shaped ``fetch`` calls (behind the host shim of docs/browser.md) and with
Segment's ``@segment/analytics-next`` from the npm registry, unchanged. The events are
read back with the secret key: each exactly once, the anonymous ones merged on identify.
A page on an origin the project does not allow is refused, and so is a secret key."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import StaticSite
from tests.e2e.server import Server, create_project, run_cli

pytestmark = pytest.mark.slow

SPOTZEE_HOST = "https://apix.spotzee.com/api"  # hard-coded in Spotzee's JS SDK 0.4

# docs/browser.md: put this before Spotzee's SDK (with your server's address).
SHIM = """
(function () {
  var from = 'https://apix.spotzee.com/api', to = 'TIDINGS/api'
  var fetch = window.fetch
  window.fetch = function (input, init) {
    var url = input instanceof URL ? input.toString() : input
    if (typeof url === 'string' && url.indexOf(from) === 0) input = to + url.slice(from.length)
    return fetch.call(this, input, init)
  }
})()
"""

# The requests of Spotzee's JS SDK 0.4 (its URL, headers and error reading), as a page
# that uses it sends them.
SPOTZEE_PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title>
<script>SHIM</script>
<script>
const API_URL = 'https://apix.spotzee.com/api'
async function call(key, path, body, extra) {
  const response = await fetch(`${API_URL}/client/${path}`, {
    method: 'POST',
    headers: Object.assign({
      'Content-Type': 'application/json',
      'Authorization': `Bearer ${key}`,
      'Spotzee-Version': '2026-04-28',
      'x-spotzee-client-type': 'sdk-js',
    }, extra || {}),
    body: JSON.stringify(body),
  })
  return {
    status: response.status,
    requestId: response.headers.get('X-Request-Id'),
    body: await response.text(),
  }
}
async function attempt(key, path, body) {
  try { return await call(key, path, body) } catch (error) { return {error: String(error)} }
}
async function visit(key, anon, user) {
  const cart = {'Idempotency-Key': `${anon}-cart`}
  const added = [{name: 'Added to cart', anonymous_id: anon, message_id: `${anon}-cart`}]
  return [
    await call(key, 'events', [{name: 'Product viewed', anonymous_id: anon, data: {sku: 'A1'}}]),
    await call(key, 'events', added, cart),
    await call(key, 'events', added, cart),  // retried, as an SDK does on a network error
    await call(key, 'identify', {external_id: user, anonymous_id: anon,
                                 email: 'sam@example.com', data: {plan: 'pro'}}),
    await call(key, 'events', [{name: 'Order placed', external_id: user, anonymous_id: anon,
                                data: {total: 129.5}}]),
    await call(key, 'events', [{anonymous_id: anon}]),  // invalid: no name
  ]
}
</script>"""

SEGMENT_PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title>
<script src="/analytics-next.js"></script>
<script>
async function visit(writeKey, cdnURL, user, batching) {
  const options = batching
    ? {integrations: {'Segment.io': {deliveryStrategy: {
        strategy: 'batching', config: {size: 10, timeout: 200}}}}}
    : {}
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load({writeKey, cdnURL}, options)
  const anonymousId = analytics.user().anonymousId()
  await analytics.page('Docs', 'Pricing', {plan: 'pro'})
  await analytics.track('Product Viewed', {sku: 'A1'})
  await analytics.identify(user, {email: 'sam@example.com', plan: 'pro'})
  await analytics.track('Order Completed', {total: 49.9})
  return anonymousId
}
async function load(writeKey, cdnURL) {
  try {
    await AnalyticsNext.AnalyticsBrowser.load({writeKey, cdnURL})
    return 'loaded'
  } catch (error) { return String(error) }
}
</script>"""


RUDDERSTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title>
<script src="/rudderstack.js"></script>
<script>
function visit(writeKey, server, user) {
  return new Promise((resolve, reject) => {
    const analytics = new rudderanalytics.RudderAnalytics()
    analytics.load(writeKey, server, {
      configUrl: server,
      onLoaded: () => {},
      queueOptions: {batch: {enabled: false}},
    })
    analytics.ready(() => {
      const anonymousId = analytics.getAnonymousId()
      analytics.page('Docs', 'Pricing', {plan: 'pro'})
      analytics.track('Product Viewed', {sku: 'A1'})
      analytics.identify(user, {email: 'sam@example.com', plan: 'pro'})
      analytics.track('Order Completed', {total: 49.9})
      resolve(anonymousId)
    })
    setTimeout(() => reject(new Error('not ready')), 15000)
  })
}
</script>"""


@dataclass
class Tidings:
    server: Server
    database: Path
    project_id: int
    pk: str
    sk: str

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.sk}"},
            timeout=10,
        )

    def event_names(self, external_id: str) -> list[str]:
        self.server.wait_drained()
        response = self.get(f"/api/client/users/{external_id}/events", limit=100)
        if response.status_code == 404:
            return []
        assert response.status_code == 200, response.text
        return sorted(row["name"] for row in response.json()["results"])

    def wait_for_events(
        self, page: Any, external_id: str, count: int, timeout: float = 30.0
    ) -> list[str]:
        """The user's event names once ``count`` of them are stored (the page sends some
        in the background), or as they are at ``timeout``. Waits in ``page``, so that
        Playwright keeps delivering its events (``page.requests``) meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            names = self.event_names(external_id)
            if len(names) >= count or time.monotonic() > deadline:
                page.wait_for_timeout(50)
                return names
            page.wait_for_timeout(100)

    def users_matching(self, text: str) -> list[dict[str, Any]]:
        self.server.wait_drained()
        response = self.get("/api/client/users", q=text)
        assert response.status_code == 200, response.text
        return list(response.json()["results"])

    def allow_origins(self, value: str) -> None:
        result = run_cli(
            self.database, "project", "update", "--id", str(self.project_id),
            "--allowed-origins", value, "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def tidings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tidings]:
    database = tmp_path_factory.mktemp("browser") / "tidings.db"
    keys = create_project(database)
    # Keys (and so allowed origins) are read again on every request.
    server = Server(database, TIDINGS_KEY_CACHE_TTL="0").start()
    try:
        yield Tidings(server, database, keys["project_id"], keys["public_key"], keys["secret_key"])
    finally:
        server.stop()


def spotzee_page(site: StaticSite, tidings: Tidings) -> str:
    return site.add(
        "/shop.html", SPOTZEE_PAGE.replace("SHIM", SHIM.replace("TIDINGS", tidings.url))
    )


def segment_page(site: StaticSite, npm_packages: Path) -> str:
    bundle = npm_packages / "@segment" / "analytics-next" / "dist" / "umd" / "index.js"
    site.add("/analytics-next.js", bundle.read_bytes(), "text/javascript")
    return site.add("/shop.html", SEGMENT_PAGE)


def rudderstack_page(site: StaticSite, npm_packages: Path) -> str:
    bundle = npm_packages / "@rudderstack/analytics-js/dist/npm/legacy/bundled/umd/index.js"
    site.add("/rudderstack.js", bundle.read_bytes(), "text/javascript")
    return site.add("/shop.html", RUDDERSTACK_PAGE)


def assert_stayed_local(page: Any, *origins: str) -> None:
    elsewhere = [url for url in page.requests if not url.startswith(origins)]
    assert elsewhere == [], elsewhere


def test_spotzee_shaped_calls_from_another_origin_are_stored_once_and_merged(
    page: Any, site: StaticSite, tidings: Tidings
) -> None:
    page.goto(spotzee_page(site, tidings))
    anon, user = f"anon-{uuid.uuid4()}", f"u-{uuid.uuid4().hex[:8]}"
    results = page.evaluate("([k, a, u]) => visit(k, a, u)", [tidings.pk, anon, user])
    assert [r["status"] for r in results] == [204, 204, 204, 204, 204, 400], page.console
    error = results[-1]
    assert error["requestId"].startswith("req_")  # X-Request-Id is exposed to the page
    assert json.loads(error["body"])["request_id"] == error["requestId"]
    assert tidings.event_names(user) == ["Added to cart", "Order placed", "Product viewed"]
    profile = tidings.get(f"/api/client/users/{user}").json()
    assert anon in profile["anonymous_ids"] and profile["email"] == "sam@example.com"
    assert_stayed_local(page, site.url, tidings.url)
    assert not any(url.startswith(SPOTZEE_HOST) for url in page.requests)


@pytest.mark.parametrize("batching", [False, True], ids=["standard", "batching"])
def test_segment_analytics_next_unchanged_with_cdn_url_at_tidings(
    page: Any, site: StaticSite, tidings: Tidings, npm_packages: Path, batching: bool
) -> None:
    page.goto(segment_page(site, npm_packages))
    user = f"seg-{uuid.uuid4().hex[:8]}"
    anon = page.evaluate(
        "([k, c, u, b]) => visit(k, c, u, b)", [tidings.pk, tidings.url, user, batching]
    )
    expected = ["Order Completed", "Page viewed", "Product Viewed"]
    assert tidings.wait_for_events(page, user, len(expected)) == expected, page.console
    profile = tidings.get(f"/api/client/users/{user}").json()
    assert anon in profile["anonymous_ids"] and profile["email"] == "sam@example.com"
    assert f"{tidings.url}/v1/projects/{tidings.pk}/settings" in page.requests
    sent = {url.removeprefix(f"{tidings.url}/v1/") for url in page.requests if "/v1/" in url}
    if batching:
        assert "b" in sent and not sent & {"t", "i", "p"}, page.requests
    else:
        assert {"t", "i", "p"} <= sent, sent
    assert_stayed_local(page, site.url, tidings.url)
    assert tidings.event_names(user) == expected  # nothing arrived twice meanwhile


def test_rudderstack_sdk_with_config_and_data_plane_at_tidings(
    page: Any, site: StaticSite, tidings: Tidings, npm_packages: Path
) -> None:
    page.goto(rudderstack_page(site, npm_packages))
    user = f"rs-{uuid.uuid4().hex[:8]}"
    anon = page.evaluate("([k, s, u]) => visit(k, s, u)", [tidings.pk, tidings.url, user])
    expected = ["Order Completed", "Page viewed", "Product Viewed"]
    assert tidings.wait_for_events(page, user, len(expected)) == expected, (
        page.console,
        page.requests,
    )
    profile = tidings.get(f"/api/client/users/{user}").json()
    assert anon in profile["anonymous_ids"], profile
    assert profile["email"] == "sam@example.com", profile
    assert any(url.startswith(f"{tidings.url}/sourceConfig/?") for url in page.requests)
    sent = {url.removeprefix(f"{tidings.url}/v1/") for url in page.requests if "/v1/" in url}
    assert {"track", "identify", "page"} <= sent, page.requests
    assert_stayed_local(page, site.url, tidings.url)
    assert tidings.event_names(user) == expected


def test_a_page_on_an_origin_the_project_does_not_allow_is_refused(
    page: Any, make_site: Any, tidings: Tidings, npm_packages: Path
) -> None:
    allowed, other = make_site(), make_site()
    tidings.allow_origins(allowed.url)
    try:
        page.goto(spotzee_page(other, tidings))
        anon = f"anon-{uuid.uuid4()}"
        body = [{"name": "Blocked", "anonymous_id": anon}]
        refused = page.evaluate("([k, b]) => attempt(k, 'events', b)", [tidings.pk, body])
        assert "Failed to fetch" in refused.get("error", ""), refused  # its preflight was
        segment_page(other, npm_packages)
        page.goto(f"{other.url}/shop.html")
        loaded = page.evaluate("([k, c]) => load(k, c)", [tidings.pk, tidings.url])
        assert "origin_not_allowed" in loaded  # the settings' 403 is readable
        page.goto(spotzee_page(allowed, tidings))
        user = f"u-{uuid.uuid4().hex[:8]}"
        allowed_body = [{"name": "Allowed", "anonymous_id": anon}]
        ok = page.evaluate("([k, b]) => attempt(k, 'events', b)", [tidings.pk, allowed_body])
        assert ok["status"] == 204, ok
        identify = {"external_id": user, "anonymous_id": anon}
        ok = page.evaluate("([k, b]) => attempt(k, 'identify', b)", [tidings.pk, identify])
        assert ok["status"] == 204, ok
    finally:
        tidings.allow_origins("*")
    # The refused event was not stored: the anonymous id's events, merged, are one.
    assert tidings.event_names(user) == ["Allowed"]


def test_a_secret_key_used_from_a_page_gets_no_answer_and_stores_nothing(
    page: Any, site: StaticSite, tidings: Tidings
) -> None:
    page.goto(spotzee_page(site, tidings))
    anon = f"anon-{uuid.uuid4()}"
    body = [{"name": "Leaked", "anonymous_id": anon}]
    result = page.evaluate("([k, b]) => attempt(k, 'events', b)", [tidings.sk, body])
    assert "Failed to fetch" in result.get("error", ""), result  # no CORS headers
    assert tidings.users_matching(anon) == []
