"""Journeys in real processes: ``tidings serve`` fires timers by itself, and a timer
pending when the server is killed fires after it starts again.

No messaging is connected in these processes (bootstrap's default send interface), so an
action step records ``not_running``: enough to see the step ran, once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import Server, create_project

GRAPH = {
    "in": {"type": "entrance", "data": {"trigger": "none"}, "children": [{"external_id": "d"}]},
    "d": {
        "type": "delay",
        "data": {"format": "duration", "duration": {"seconds": 3}},
        "children": [{"external_id": "m"}],
    },
    "m": {"type": "action", "data": {"campaign_id": 1}},
}


def _path(server: Server, headers: dict[str, str], journey_id: int, user: str) -> list[Any]:
    r = httpx.get(
        f"{server.url}/api/client/journeys/{journey_id}/users/{user}", headers=headers, timeout=5
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _until_sent(server: Server, headers: dict[str, str], journey_id: int, user: str) -> list:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entrances = _path(server, headers, journey_id, user)
        if entrances and entrances[0]["state"] == "done":
            return entrances
        time.sleep(0.1)
    raise AssertionError(f"the journey did not finish: {entrances}")


def test_serve_fires_journey_timers_and_keeps_them_across_a_kill(tmp_path: Path) -> None:
    database = tmp_path / "tidings.db"
    project = create_project(database)
    headers = {"Authorization": f"Bearer {project['secret_key']}"}
    server = Server(database).start()
    try:
        base = f"{server.url}/api/client"
        journey_id = httpx.post(f"{base}/journeys", json={"name": "e2e"}, headers=headers).json()[
            "id"
        ]
        assert httpx.put(
            f"{base}/journeys/{journey_id}/steps", json=GRAPH, headers=headers
        ).is_success
        r = httpx.patch(f"{base}/journeys/{journey_id}", json={"status": "live"}, headers=headers)
        assert r.status_code == 200, r.text
        r = httpx.post(
            f"{base}/journeys/{journey_id}/trigger",
            json={"user": {"external_id": "first"}},
            headers=headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        done = _until_sent(server, headers, journey_id, "first")
        assert [p["outcome"] for p in done[0]["path"]] == ["entered", "completed", "not_running"]
        r = httpx.post(
            f"{base}/journeys/{journey_id}/trigger",
            json={"user": {"external_id": "second"}},
            headers=headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert _path(server, headers, journey_id, "second")[0]["state"] == "waiting"
        server.kill()  # with the second user's timer pending
        server = Server(database).start()
        done = _until_sent(server, headers, journey_id, "second")
        assert [p["step_uuid"] for p in done[0]["path"]] == ["in", "d", "m"]
    finally:
        server.stop()
