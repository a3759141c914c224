"""The real RudderStack Python SDK (``rudder-sdk-python``, a dev dependency) against
``tidings serve``: it sends identify's traits in ``context.traits``, not in a top-level
``traits``, and those reach the profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rudderstack.analytics.client import Client

from tests.e2e.server import Server, create_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    database: Path = tmp_path_factory.mktemp("rudder") / "tidings.db"
    keys = create_project(database)
    server = Server(database).start()
    try:
        yield server, keys
    finally:
        server.stop()


def profile(server: Server, secret_key: str, external_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/client/users/{external_id}",
        headers={"Authorization": f"Bearer {secret_key}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_identify_group_and_track_of_the_rudderstack_sdk_reach_the_profile(
    running: tuple[Server, dict[str, Any]], gzip: bool
) -> None:
    server, keys = running
    errors: list[Any] = []
    sdk = Client(
        write_key=keys["public_key"],
        host=server.url,
        on_error=lambda error, batch: errors.append((error, batch)),
        sync_mode=True,
        gzip=gzip,
        max_retries=2,
        timeout=10,
    )
    user = f"rudder-{gzip}"
    sdk.identify(
        user_id=user,
        traits={"email": "Rudder@Example.com", "plan": "pro"},
        context={"timezone": "Australia/Sydney"},
    )
    sdk.group(user_id=user, group_id="acme", traits={"name": "Acme"})
    sdk.track(user_id=user, event="Order Completed", properties={"total": 10})
    assert errors == []
    server.wait_drained()
    found = profile(server, keys["secret_key"], user)
    assert found["email"] == "Rudder@example.com"
    assert found["timezone"] == "Australia/Sydney"
    assert found["data"] == {"plan": "pro", "group_acme": {"name": "Acme"}}
    events = httpx.get(
        f"{server.url}/api/client/users/{user}/events",
        headers={"Authorization": f"Bearer {keys['secret_key']}"},
        timeout=5,
    ).json()
    assert [e["name"] for e in events["results"]] == ["Order Completed"]
