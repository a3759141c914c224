"""scripts/_venv.sh installs only when it must: scripts/serve (a run install) and
scripts/test (a dev install, which has all a run install has) can alternate without
reinstalling. pip is the edge here: a stand-in ``.venv/bin/python`` records its calls."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clone(tmp_path: Path) -> Path:
    for name in (
        "scripts/_venv.sh",
        "pyproject.toml",
        "constraints.txt",
        "clients/python/pyproject.toml",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/../calls"\n')
    python.chmod(0o755)
    return tmp_path


def _setup(clone: Path, mode: str) -> list[str]:
    """Source _venv.sh in ``mode``; the pip installs it ran."""
    calls = clone / ".venv" / "calls"
    calls.unlink(missing_ok=True)
    subprocess.run(
        ["bash", "-c", f"source scripts/_venv.sh {mode}"], cwd=clone, check=True, timeout=60
    )
    if not calls.exists():
        return []
    return [line for line in calls.read_text().splitlines() if "install" in line and "-e" in line]


def test_serve_and_test_alternate_without_reinstalling(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    assert any(".[dev]" in call for call in _setup(clone, "dev"))  # first: installs
    assert _setup(clone, "run") == []  # scripts/serve after scripts/test
    assert _setup(clone, "dev") == []  # and back
    assert _setup(clone, "run") == []


def test_a_run_install_is_upgraded_to_dev_once_and_a_changed_pin_reinstalls(
    tmp_path: Path,
) -> None:
    clone = _clone(tmp_path)
    assert _setup(clone, "run") != []
    assert _setup(clone, "run") == []
    assert any(".[dev]" in call for call in _setup(clone, "dev"))  # run lacks dev tools
    assert _setup(clone, "run") == []
    with (clone / "constraints.txt").open("a") as pins:
        pins.write("# a changed pin\n")
    assert _setup(clone, "run") != []
