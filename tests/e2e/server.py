"""Run real ``tidings`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tidings.store.leases import PARTITION_SPACE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(database: Path | str, **extra: str) -> dict[str, str]:
    """The environment of a ``tidings`` process: a SQLite file, or a database URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    url = f"sqlite:///{database}" if isinstance(database, Path) else database
    env["TIDINGS_DATABASE_URL"] = url
    env.update(extra)
    return env


def run_cli(database: Path | str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env=cli_env(database, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_project(database: Path | str) -> dict[str, Any]:
    assert run_cli(database, "migrate").returncode == 0
    result = run_cli(database, "project", "create", "--name", "e2e", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_partition_holders(url: str, holders: int, timeout: float = 30.0) -> None:
    """Wait until exactly ``holders`` worker processes hold partition leases (PostgreSQL
    advisory locks) in the database at ``url``."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.text(
                        "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND classid = :space AND granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"space": PARTITION_SPACE},
                ).scalar_one()
            if found == holders:
                return
            assert time.monotonic() < deadline, (
                f"{found} workers hold partitions, not {holders}, after {timeout} s"
            )
            time.sleep(0.05)
    finally:
        engine.dispose()


class _Process:
    """A ``tidings`` subcommand in a subprocess, its output kept for the test to read."""

    def __init__(self, database: Path | str, command: str, **env: str) -> None:
        self.database = database
        self.command = command
        self.env = env
        self.process: subprocess.Popen[str] | None = None

    def _args(self) -> list[str]:
        return [self.command]

    def _spawn(self) -> subprocess.Popen[str]:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidings", *self._args()],
            env=cli_env(self.database, **self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self.process

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL; fails if the process had already ended by itself."""
        assert self.process is not None
        if self.process.poll() is not None:
            output = self.process.stdout.read() if self.process.stdout else ""
            raise AssertionError(
                f"tidings {self.command} had exited ({self.process.returncode}) before the "
                f"kill:\n{output}"
            )
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        """SIGTERM (SIGKILL after 15 s) if still running; the process's whole output."""
        if self.process is None:
            return ""
        if self.process.poll() is None:
            children = _children(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                # Its children (serve's worker, the log writer) share its output pipe and
                # would keep the read below waiting: they go too.
                for pid in [self.process.pid, *children]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(5)
        output = self.process.stdout.read() if self.process.stdout else ""
        self.process = None
        return output


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                found.append(int(status.parent.name))
        except (OSError, ValueError):
            continue
    return found


class Server(_Process):
    """``tidings serve`` (or ``api``) in a subprocess on a free loopback port."""

    def __init__(self, database: Path | str, *, command: str = "serve", **env: str) -> None:
        super().__init__(database, command, **env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        return [self.command, "--port", str(self.port)]

    def start(self, timeout: float = 30.0) -> Server:
        process = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready")

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/health", timeout=5).json()

    def wait_drained(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.health()["log_lag"] > 0:
            assert time.monotonic() < deadline, "the log did not drain"
            time.sleep(0.05)


class Worker(_Process):
    """``tidings worker`` in a subprocess."""

    def __init__(self, database: Path | str, **env: str) -> None:
        super().__init__(database, "worker", **env)

    def start(self) -> Worker:
        self._spawn()
        return self
