"""Save screenshots of the admin UI's main pages under docs/screenshots/ (run scripts/screenshots)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("TIDINGS_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL, PASSWORD = "maria@acme.example", "screenshots only"
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def _env(database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(TIDINGS_DATABASE_URL=f"sqlite:///{database}", TIDINGS_DEMO_PROJECT="false", **extra)
    return env


def _cli(database: Path, *args: str, **extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env=_env(database, **extra),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(url: str, pk: str, sk: str) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    client = httpx.Client(base_url=url, timeout=30)
    public = {"Authorization": f"Bearer {pk}"}
    users = []
    for n in range(36):
        first, last = FIRST[n % len(FIRST)], LAST[(n * 3) % len(LAST)]
        external = f"cus_{1000 + n}"
        users.append(external)
        client.post(
            "/api/client/identify",
            headers=public,
            json={
                "external_id": external,
                "anonymous_id": f"anon-{n:04d}",
                "email": f"{first.lower()}.{last.lower()}{n}@example.com",
                "data": {
                    "first_name": first,
                    "last_name": last,
                    "plan": rng.choice(["free", "free", "pro", "team"]),
                    "country": rng.choice(["AU", "GB", "DE", "US", "NZ"]),
                    "orders": rng.randint(0, 12),
                    "address": {"city": rng.choice(["Sydney", "Berlin", "Leeds", "Austin"])},
                },
            },
        ).raise_for_status()
    client.post(
        "/api/client/devices",
        headers=public,
        json={
            "external_id": "cus_1000",
            "device_id": "iphone-ada",
            "token": "apns-token",
            "os": "iOS",
            "os_version": "18.1",
            "model": "iPhone 15",
            "app_build": "412",
            "app_version": "3.2.0",
        },
    ).raise_for_status()
    _journey(client, {"Authorization": f"Bearer {sk}"})
    names = ["App opened", "Viewed product", "Added to cart", "Order placed", "Searched"]
    events = []
    for n in range(160):
        name = rng.choice(names)
        data: dict[str, Any] = {"screen": rng.choice(["home", "catalogue", "checkout"])}
        if name == "Order placed":
            data = {"total": round(rng.uniform(12, 240), 2), "currency": "AUD", "items": rng.randint(1, 5)}
        if name == "Viewed product":
            data = {"sku": f"SKU-{rng.randint(100, 999)}", "price": round(rng.uniform(5, 90), 2)}
        moment = now - timedelta(minutes=rng.randint(0, 600), seconds=rng.randint(0, 59))
        events.append(
            {
                "name": name,
                "external_id": "cus_1000" if n < 14 else rng.choice(users),
                "data": data,
                "created_at": moment.isoformat(),
            }
        )
    for start in range(0, len(events), 50):
        client.post("/api/client/events", headers=public, json=events[start : start + 50]).raise_for_status()
    # A synchronous call: answered once everything before it is applied.
    client.post(
        "/api/client/users/batch", headers={"Authorization": f"Bearer {sk}"}, json=[{"external_id": "cus_1000"}]
    ).raise_for_status()


def _journey(client: httpx.Client, secret: dict[str, str]) -> None:
    """A live journey that the seeded events run through: its graph, counts and conversion."""
    made = client.post(
        "/api/client/journeys",
        headers=secret,
        json={
            "name": "Browse to buy",
            "description": "Nudges people who look at products but do not add them to a cart.",
            "settings": {"goal": {"event_name": "Order placed", "within": {"days": 7}}},
        },
    )
    made.raise_for_status()
    journey_id = made.json()["id"]
    carted = {"type": "wrapper", "group": "event", "path": "name", "value": "Added to cart",
              "operator": "and", "children": []}
    steps = {
        "in": {"type": "entrance", "name": "Viewed a product",
               "data": {"trigger": "event", "event_name": "Viewed product"},
               "children": [{"external_id": "carted"}]},
        "carted": {"type": "gate", "name": "Added to cart?", "data": {"rule": carted},
                   "children": [{"external_id": "bought", "path": "yes"},
                                {"external_id": "later", "path": "no"}]},
        "bought": {"type": "exit", "name": "In the cart", "data": {}},
        "later": {"type": "delay", "name": "Wait a day",
                  "data": {"format": "duration", "duration": {"days": 1}},
                  "children": [{"external_id": "done"}]},
        "done": {"type": "exit", "name": "Done", "data": {}},
    }
    client.put(f"/api/client/journeys/{journey_id}/steps", headers=secret, json=steps).raise_for_status()
    client.patch(
        f"/api/client/journeys/{journey_id}", headers=secret, json={"status": "live"}
    ).raise_for_status()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "tidings.db"
        _cli(database, "migrate")
        made = json.loads(
            _cli(database, "project", "create", "--name", "Acme Shop", "--locale", "en-AU",
                 "--timezone", "Australia/Sydney", "--json")
        )
        _cli(database, "project", "create", "--name", "Acme Staging")
        _cli(database, "admin", "create", "--email", EMAIL, TIDINGS_ADMIN_PASSWORD=PASSWORD)
        port = _port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--port", str(port)],
            env=_env(database),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            _seed(url, made["public_key"], made["secret_key"])
            _shoot(url, made["project_id"])
        finally:
            server.terminate()
            server.wait(20)


def _shoot(url: str, pid: int) -> None:
    base = f"{url}/admin/p/{pid}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()

        def save(name: str, full: bool = False) -> None:
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
            print(f"docs/screenshots/{name}.png")

        page.goto(f"{url}/admin/login")
        page.fill("#f-email", EMAIL)
        save("login")
        page.fill("#f-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/users")
        save("users")
        page.goto(f"{base}/users?q=cus_1000")
        page.click("table a >> nth=0")
        save("profile", full=True)
        page.goto(f"{base}/events")
        page.wait_for_selector(".live-dot.on")
        save("events")
        # Lists: a dynamic one with the live count, a static one with members.
        page.goto(f"{base}/lists/new")
        page.fill("#f-name", "Pro customers in Australia")
        # The rule builder: plan = pro, and a group: country AU or NZ.
        first = page.locator(".rule-row").nth(0)
        first.locator(".rule-path").fill("data.plan")
        first.locator(".rule-operator").select_option("=")
        first.locator(".rule-value").fill("pro")
        page.click("button[data-add=group]")
        nested = page.locator(".rule-group.nested")
        nested.locator(".rule-combinator").select_option("or")
        for n, country in enumerate(["AU", "NZ"]):
            if n:
                nested.locator("button[data-add=condition]").click()
            row = nested.locator(".rule-row").nth(n)
            row.locator(".rule-path").fill("data.country")
            row.locator(".rule-operator").select_option("=")
            row.locator(".rule-value").fill(country)
        page.locator(".rule-value").last.blur()
        page.wait_for_timeout(600)  # the count follows the last keystroke
        page.wait_for_selector('#rule-check[aria-busy="false"] [data-count]')
        page.fill("#f-tags", "marketing, au")
        save("list-editor", full=True)
        page.click("text=Create list")
        page.goto(f"{base}/lists/new")
        page.fill("#f-name", "Beta testers")
        page.check("input[value=static]")
        page.click("text=Create list")
        page.fill("#csv-text", "external_id\n" + "\n".join(f"cus_{1000 + n}" for n in range(0, 30, 3)))
        page.click("button:has-text('Import')")
        page.wait_for_selector(".notice")
        page.goto(f"{base}/lists")
        save("lists")
        page.click("table >> text=Beta testers")
        list_id = page.url.rsplit("/", 1)[-1]
        save("list", full=True)
        page.goto(f"{base}/keys")
        page.fill("#f-name", "Checkout service")
        page.click("text=Create key")
        save("keys", full=True)
        page.goto(f"{base}/schema")
        save("schema", full=True)
        page.goto(f"{base}/settings")
        save("settings")
        page.goto(f"{base}/journeys")
        save("journeys")
        page.click("table a >> nth=0")
        save("journey", full=True)
        page.goto(f"{base}/campaigns")
        save("campaigns")
        page.goto(f"{base}/reports?list=" + list_id)
        for chart in page.locator("img.chart").all():
            page.wait_for_function("img => img.complete", arg=chart.element_handle())
        save("reports", full=True)
        page.goto(f"{base}/team")
        page.fill("#f-email", "sam@acme.example")
        page.select_option("#f-role", "editor")
        page.click("button:has-text('Invite')")
        page.fill("#f-email", "lee@acme.example")
        page.select_option("#f-role", "support")
        page.click("button:has-text('Invite')")
        save("team", full=True)
        browser.close()


if __name__ == "__main__":
    main()
