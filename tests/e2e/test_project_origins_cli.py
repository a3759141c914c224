"""``tidings project update --allowed-origins``: what it stores, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.server import create_project, run_cli

pytestmark = pytest.mark.slow


def test_allowed_origins_are_set_listed_and_reset_from_the_cli(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    project = create_project(database)["project_id"]
    update = ["project", "update", "--id", str(project)]

    result = run_cli(
        database,
        *update,
        "--allowed-origins",
        "https://Shop.example.com:443, http://localhost:3000",
    )
    assert result.returncode == 0, result.stderr
    assert "https://shop.example.com, http://localhost:3000" in result.stdout

    result = run_cli(database, *update, "--allowed-origins", "https://*.example.com", "--json")
    assert json.loads(result.stdout) == {
        "project_id": project,
        "allowed_origins": ["https://*.example.com"],
    }

    bad = run_cli(database, *update, "--allowed-origins", "https://example.com/shop")
    assert bad.returncode == 1 and "is not a web origin" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_cli(database, "project", "update", "--id", "999", "--allowed-origins", "*")
    assert missing.returncode == 1 and "no project 999" in missing.stderr
    nothing = run_cli(database, *update)
    assert nothing.returncode == 1 and "--allowed-origins" in nothing.stderr

    result = run_cli(database, *update, "--allowed-origins", "*", "--json")
    assert json.loads(result.stdout)["allowed_origins"] is None
