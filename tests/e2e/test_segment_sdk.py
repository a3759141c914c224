"""The real Segment Python SDK (``segment-analytics-python``, a dev dependency) against
``tidings serve``: what the SDK sends is accepted, mapped, and stored exactly once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment.analytics import client as analytics
from segment.analytics import request as request_module

from tests.e2e.server import Server, create_project

pytestmark = pytest.mark.slow


@dataclass
class Running:
    server: Server
    database: Path
    public_key: str
    secret_key: str

    def profile(self, external_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.server.url}/api/client/users/{external_id}",
            headers={"Authorization": f"Bearer {self.secret_key}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.database) as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    database = tmp_path_factory.mktemp("segment") / "tidings.db"
    keys = create_project(database)
    server = Server(database).start()
    try:
        yield Running(server, database, keys["public_key"], keys["secret_key"])
    finally:
        server.stop()


def client(running: Running, errors: list[Any], **options: Any) -> Any:
    return analytics.Client(
        write_key=running.public_key,
        host=running.server.url,
        on_error=lambda error, batch: errors.append((error, batch)),
        max_retries=2,
        timeout=10,
        **options,
    )


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_every_call_of_the_sdk_is_accepted_and_mapped(running: Running, gzip: bool) -> None:
    errors: list[Any] = []
    sdk = client(running, errors, sync_mode=True, gzip=gzip)
    user, anon = f"sdk-user-{gzip}", f"sdk-anon-{gzip}"
    sdk.track(anonymous_id=anon, event="Product Viewed", properties={"sku": "A1"})
    sdk.page(anonymous_id=anon, category="Docs", name="Pricing", properties={"url": "/pricing"})
    sdk.identify(
        user_id=user,
        traits={"email": "Sam@Example.com", "phone": "+61 491 570 006", "plan": "pro"},
        context={"timezone": "Australia/Sydney", "locale": "en-AU"},
    )
    sdk.alias(previous_id=anon, user_id=user)
    sdk.group(user_id=user, group_id="acme", traits={"name": "Acme"})
    sdk.screen(user_id=user, name="Home")
    sdk.track(user_id=user, event="Order Completed", properties={"total": 10})
    assert errors == []
    running.server.wait_drained()

    profile = running.profile(user)
    assert profile["email"] == "Sam@example.com"
    assert profile["phone"] == "+61491570006"
    assert (profile["timezone"], profile["locale"]) == ("Australia/Sydney", "en-AU")
    assert profile["data"] == {"plan": "pro", "group_acme": {"name": "Acme"}}
    assert profile["anonymous_ids"] == [anon]  # the alias merged the anonymous profile
    rows = running.rows(
        "SELECT e.name, json_extract(e.data, '$.name') FROM events e "
        "JOIN profiles p ON p.id = e.profile_id WHERE p.external_id = ? ORDER BY e.created_at",
        user,
    )
    assert rows == [
        ("Product Viewed", None),
        ("Page viewed", "Pricing"),
        ("Screen viewed", "Home"),
        ("Order Completed", None),
    ]


def test_a_flush_of_3000_events_stores_each_exactly_once(running: Running) -> None:
    errors: list[Any] = []
    sdk = client(running, errors, upload_interval=0.05, max_queue_size=10_000)
    total = 3000
    for seq in range(total):
        queued, _ = sdk.track(
            user_id=f"bulk-{seq % 40}", event="Bulk Tick", properties={"seq": seq}
        )
        assert queued
    sdk.flush()
    sdk.join()
    assert errors == []
    running.server.wait_drained()
    rows = running.rows(
        "SELECT json_extract(data, '$.seq'), count(*) FROM events WHERE name = 'Bulk Tick' "
        "GROUP BY 1"
    )
    assert len(rows) == total
    assert {seq for seq, _ in rows} == set(range(total))
    assert all(count == 1 for _, count in rows)


def test_a_retried_batch_has_no_second_effect(running: Running) -> None:
    batch = [
        {
            "type": "track",
            "userId": "retry-user",
            "event": "Retried",
            "messageId": f"retry-{i}",
            "timestamp": "2026-05-01T10:00:00.000Z",
        }
        for i in range(5)
    ]
    for _ in range(3):  # the SDK's own request function, as its consumer retries
        response = request_module.post(
            running.public_key, running.server.url, batch=[dict(m) for m in batch]
        )
        assert response.status_code == 200
        assert response.json() == {"success": True}
    running.server.wait_drained()
    [(count,)] = running.rows("SELECT count(*) FROM events WHERE name = 'Retried'")
    assert count == 5


def test_an_unknown_write_key_is_an_api_error_the_sdk_does_not_retry(running: Running) -> None:
    with pytest.raises(request_module.APIError) as raised:
        request_module.post(
            "pk_unknown", running.server.url, batch=[{"type": "track", "userId": "u", "event": "E"}]
        )
    assert raised.value.status == 401
    assert raised.value.code == "authentication_required"
