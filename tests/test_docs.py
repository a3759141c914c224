"""Examples in the documentation match what the server answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


async def test_the_health_example_has_the_fields_of_the_answer(client: httpx.AsyncClient) -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    found = re.search(r'curl "\$TIDINGS/api/health"\n# (\{.*\})', text)
    assert found, "docs/api.md has no health example"
    example = json.loads(found.group(1))
    answer = (await client.get("/api/health")).json()
    assert list(example) == list(answer)
    assert example["status"] == answer["status"] == "ok"


def _shell_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_the_readme_runs_the_command_line_through_a_path_a_clone_has() -> None:
    """A fresh clone has no `tidings` on its PATH: commands go through scripts/tidings."""
    lines = _shell_lines((ROOT / "README.md").read_text())
    bare = [line for line in lines if re.match(r"(.*&&\s*)?tidings\s", line)]
    assert not bare, bare
    assert (ROOT / "scripts" / "tidings").is_file()


def test_the_quickstart_waits_for_processing_before_reading_back() -> None:
    lines = _shell_lines((ROOT / "README.md").read_text())
    post = next(i for i, line in enumerate(lines) if "/api/client/events" in line)
    read = next(i for i, line in enumerate(lines) if "/users/u_42/events" in line)
    assert any(line.startswith("sleep ") for line in lines[post:read]), lines[post : read + 1]
