"""A fresh clone in an empty folder passes its own tests: nothing in the repository reads
a file outside it (the SDK contract once came from a ``shared/`` folder beside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CONTRACT

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("src", "tests", "scripts", "bench", "clients", ".ci")
# A path climbing out of the repository (up a level into the shared folder, or a parent
# index joined with it), or an absolute path into the machine the project was built on.
OUTSIDE = re.compile(r"\.\./shared|parents\[\d\]\s*/\s*[\"']shared|/work/shared|/work/wt/")


def _files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", *CHECKED],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_the_sdk_contract_is_inside_the_repository() -> None:
    assert CONTRACT.is_file()
    assert CONTRACT.resolve().is_relative_to(ROOT)


def test_no_code_test_or_script_reads_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    offenders = []
    for path in _files():
        if path.resolve() == me or path.suffix not in ("", ".py", ".sh", ".toml", ".cfg"):
            continue
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
