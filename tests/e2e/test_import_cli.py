"""``tidings import``: a large CSV into a static list, beside a running server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, cli_env, create_project, run_cli

pytestmark = pytest.mark.slow

USERS = 20_000


def _api(server: Server, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/client",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _list(api: httpx.Client, list_id: int) -> dict[str, Any]:
    response = api.get(f"/lists/{list_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A server with users u0, u1, … (10, or as many as the test's indirect parameter says)
    and an empty static list."""
    users = getattr(request, "param", 10)
    database = tmp_path / "t.db"
    project = create_project(database)
    server = Server(database).start()
    api = _api(server, project["secret_key"])
    try:
        for start in range(0, users, 100):
            batch = [{"external_id": f"u{i}"} for i in range(start, min(start + 100, users))]
            assert api.patch("/users", json=batch).status_code == 204
        server.wait_drained()
        created = api.post("/lists", json={"name": "Imported", "type": "static"})
        assert created.status_code == 201, created.text
        yield database, project["project_id"], created.json()["id"], api
    finally:
        api.close()
        server.stop()


@pytest.mark.parametrize("setup", [USERS], indirect=True, ids=[f"{USERS}-users"])
def test_twenty_thousand_rows_are_imported_and_a_rerun_adds_nothing(
    setup: Any, tmp_path: Path
) -> None:
    database, project_id, list_id, api = setup
    csv = tmp_path / "members.csv"
    rows = [f"u{i}" for i in range(USERS - 3)] + ["nobody", "x" * 300, "u5"]
    csv.write_text("external_id\n" + "\n".join(rows) + "\n")
    args = ["import", "--project", str(project_id), "--list", str(list_id), str(csv), "--json"]

    first = run_cli(database, *args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary == {
        "list_id": list_id,
        "rows": USERS,
        "added": USERS - 3,
        "already_member": 1,
        "not_found": 1,
        "invalid": 1,
        "not_found_rows": [USERS - 1],
        "invalid_rows": [
            {
                "row": USERS,
                "code": "parameter_invalid_format",
                "message": "The external_id is longer than 255 characters.",
            }
        ],
    }
    assert _list(api, list_id)["users_count"] == USERS - 3
    members = api.get(f"/lists/{list_id}/users", params={"limit": 100}).json()
    assert len(members["results"]) == 100 and members["nextCursor"]

    again = run_cli(database, *args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"] == 0
    assert json.loads(again.stdout)["already_member"] == USERS - 2
    assert _list(api, list_id)["users_count"] == USERS - 3


def test_a_broken_file_or_a_wrong_list_writes_nothing(setup: Any, tmp_path: Path) -> None:
    database, project_id, list_id, api = setup
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"external_id\nu1\nu2\n" + b'"u3\nu4\n')  # quote never closed
    result = run_cli(
        database, "import", "--project", str(project_id), "--list", str(list_id), str(broken)
    )
    assert result.returncode == 1 and "Row 4" in result.stderr
    assert _list(api, list_id)["users_count"] == 0

    good = tmp_path / "good.csv"
    good.write_text("email\nnobody@example.com\n")
    for project, target in ((project_id, list_id + 1), (project_id + 1, list_id)):
        missing = run_cli(
            database, "import", "--project", str(project), "--list", str(target), str(good)
        )
        assert missing.returncode == 1 and "has no list" in missing.stderr
    rule = {"type": "wrapper", "group": "user", "operator": "and", "children": []}
    dynamic = api.post("/lists", json={"name": "D", "type": "dynamic", "rule": rule})
    assert dynamic.status_code == 201, dynamic.text
    refused = run_cli(
        database,
        "import",
        "--project",
        str(project_id),
        "--list",
        str(dynamic.json()["id"]),
        str(good),
    )
    assert refused.returncode == 1 and "dynamic" in refused.stderr


def test_a_terminal_sees_a_progress_bar_and_a_summary(setup: Any, tmp_path: Path) -> None:
    database, project_id, list_id, _ = setup
    csv = tmp_path / "few.csv"
    csv.write_text("external_id\nu1\nu2\nmissing\n")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings", "import", "--project", str(project_id),
         "--list", str(list_id), str(csv)],
        env={**cli_env(database), "TERM": "xterm", "COLUMNS": "100"},
        stdout=terminal,
        stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0
    text = output.decode(errors="replace")
    assert "3/3" in text and "━" in text  # rich's bar, complete
    assert "list " in text and "2 added" in text and "row 4: no such user" in text
