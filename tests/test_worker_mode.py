"""Where `tidings serve` runs the consumer: TIDINGS_WORKER_MODE and its `auto` default."""

from __future__ import annotations

import os

import pytest

from tidings.cli import _worker_mode
from tidings.settings import Settings


def test_auto_is_the_default() -> None:
    assert Settings(database_url="sqlite:///x.db").worker_mode == "auto"


@pytest.mark.parametrize(("cores", "expected"), [(1, "thread"), (2, "process"), (8, "process")])
def test_auto_takes_a_child_process_when_there_is_a_second_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: str
) -> None:
    # The cores this process may run on (a container's CPU set), not the machine's count.
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert _worker_mode(Settings(database_url="sqlite:///x.db")) == expected


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_an_explicit_mode_wins(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    monkeypatch.setenv("TIDINGS_WORKER_MODE", mode)
    assert _worker_mode(Settings(database_url="sqlite:///x.db")) == mode
