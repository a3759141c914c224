"""Run real ``tidings`` processes for end-to-end tests."""

from __future__ import annotations

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


class Server:
    """``tidings serve`` (or ``api``) in a subprocess on a free loopback port."""

    def __init__(self, database: Path | str, *, command: str = "serve", **env: str) -> None:
        self.database = database
        self.command = command
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidings", self.command, "--port", str(self.port)],
            env=cli_env(self.database, **self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
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

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        output = self.process.stdout.read() if self.process.stdout else ""
        self.process = None
        return output


class Worker:
    """``tidings worker`` in a subprocess."""

    def __init__(self, database: Path | str, **env: str) -> None:
        self.database = database
        self.env = env
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "worker"],
            env=cli_env(self.database, **self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        output = self.process.stdout.read() if self.process.stdout else ""
        self.process = None
        return output
