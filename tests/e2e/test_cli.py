"""The command line, against real server processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, cli_env, create_project, free_port, run_cli
from tidings.pipeline.priority import IdlePriority
from tidings.store.migrate import head_revision

pytestmark = pytest.mark.slow

EVENT = [{"name": "E", "external_id": "u"}]


def test_migrate_is_safe_to_run_twice_and_can_go_down(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    for _ in range(2):
        result = run_cli(database, "migrate")
        assert result.returncode == 0, result.stderr
        assert f"revision {head_revision()}" in result.stderr
    down = run_cli(database, "migrate", "--down")
    assert down.returncode == 0 and "base" in down.stderr
    refused = run_cli(database, "project", "create", "--name", "x", "--json")
    assert refused.returncode == 1 and "tidings migrate" in refused.stderr


def test_project_create_prints_one_json_line(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    run_cli(database, "migrate")
    result = run_cli(
        database,
        "project", "create", "--name", "Shop", "--locale", "en-AU",
        "--timezone", "Australia/Sydney", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"project_id", "public_key", "secret_key"}
    assert created["public_key"].startswith("pk_") and created["secret_key"].startswith("sk_")
    bad = run_cli(database, "project", "create", "--name", "X", "--timezone", "Mars/Base")
    assert bad.returncode == 1 and "IANA" in bad.stderr


def test_keys_created_and_revoked_from_the_cli_take_effect(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    project = create_project(database)
    server = Server(database, TIDINGS_KEY_CACHE_TTL="0").start()
    try:
        made = run_cli(
            database, "key", "create", "--project", str(project["project_id"]),
            "--scope", "secret", "--role", "support", "--json",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        assert key["role"] == "support" and key["key"].startswith("sk_")
        headers = {"Authorization": f"Bearer {key['key']}"}
        response = httpx.patch(
            f"{server.url}/api/client/users", json=[{"external_id": "u"}], headers=headers
        )
        assert response.status_code == 403
        public = json.loads(
            run_cli(
                database, "key", "create", "--project", str(project["project_id"]),
                "--scope", "public", "--json",
            ).stdout
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {public['key']}"}
        assert (
            httpx.post(f"{server.url}/api/client/events", json=EVENT, headers=headers).status_code
            == 204
        )
        revoked = run_cli(database, "key", "revoke", "--id", str(public["key_id"]), "--json")
        assert json.loads(revoked.stdout) == {"key_id": public["key_id"], "revoked": True}
        assert (
            httpx.post(f"{server.url}/api/client/events", json=EVENT, headers=headers).status_code
            == 401
        )
        missing = run_cli(database, "key", "create", "--project", "999", "--json")
        assert missing.returncode == 1
    finally:
        server.stop()


def test_serve_creates_a_demo_project_once_and_prints_its_keys(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    port = free_port()
    env = cli_env(database)
    env.pop("TIDINGS_DEMO_PROJECT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        process.terminate()
        output = process.communicate(timeout=20)[0]
    finally:
        if process.poll() is None:
            process.kill()
    public = re.search(r"public key: (pk_\S+)", output)
    secret = re.search(r"secret key: (sk_\S+)", output)
    assert public and secret, output
    # The printed keys work against a second server on the same database.
    server = Server(database).start()
    try:
        headers = {"Authorization": f"Bearer {public.group(1)}"}
        assert (
            httpx.post(f"{server.url}/api/client/events", json=EVENT, headers=headers).status_code
            == 204
        )
        output = server.stop()
    finally:
        server.stop()
    assert "public key" not in output  # created once only


def test_two_servers_side_by_side(tmp_path: Path) -> None:
    servers = []
    try:
        for name in ("a", "b"):
            database = tmp_path / f"{name}.db"
            keys = create_project(database)
            servers.append((Server(database).start(), keys))
        (a, a_keys), (b, _) = servers
        assert a.port != b.port
        assert httpx.post(
            f"{a.url}/api/client/events", json=EVENT,
            headers={"Authorization": f"Bearer {a_keys['public_key']}"},
        ).status_code == 204  # fmt: skip
        assert httpx.post(
            f"{b.url}/api/client/events", json=EVENT,
            headers={"Authorization": f"Bearer {a_keys['public_key']}"},
        ).status_code == 401  # fmt: skip
    finally:
        for server, _ in servers:
            server.stop()


def test_worker_child_process_processes_and_follows_serve(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    keys = create_project(database)
    server = Server(database, TIDINGS_WORKER_MODE="process").start()
    try:
        headers = {"Authorization": f"Bearer {keys['public_key']}"}
        body = [{"name": "E", "external_id": "u_child"}]
        assert (
            httpx.post(f"{server.url}/api/client/events", json=body, headers=headers).status_code
            == 204
        )
        server.wait_drained()
        events = httpx.get(
            f"{server.url}/api/client/users/u_child/events",
            headers={"Authorization": f"Bearer {keys['secret_key']}"},
        ).json()["results"]
        assert [e["name"] for e in events] == ["E"]
        health = server.health()
        assert health["worker"] is True and health["worker_mode"] == "process"
        assert health["processed"] is None  # counted in the child, not here
        children = _children(server.process.pid)  # type: ignore[union-attr]
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)  # the supervisor restarts it within a second
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = _children(server.process.pid)  # type: ignore[union-attr]
            if now and now != children:
                break
            time.sleep(0.02)
        children = _children(server.process.pid)  # type: ignore[union-attr]
        assert len(children) == 1 and server.health()["worker"] is True
        body = [{"name": "After the restart", "external_id": "u_child"}]
        assert (
            httpx.post(f"{server.url}/api/client/events", json=body, headers=headers).status_code
            == 204
        )
        server.wait_drained()
        (writer,) = _children(server.process.pid, "tidings.log.writer")  # type: ignore[union-attr]
        server.kill()
        deadline = time.monotonic() + 10
        for pid, what in ((children[0], "the worker"), (writer, "the log writer")):
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not Path(f"/proc/{pid}").exists(), f"{what} outlived serve"
    finally:
        server.stop()


def _children(pid: int, argument: str = "worker") -> list[int]:
    """The child processes of ``pid`` with ``argument`` on their command line: ``worker``
    (`tidings worker`) or ``tidings.log.writer`` (the log writer)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            command = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text and argument.encode() in command:
            found.append(int(status.parent.name))
    return found


@contextmanager
def _serving_one_event(
    tmp_path: Path, variable: str, setting: str | None
) -> Iterator[tuple[int, int]]:
    """`serve` with its worker child (and ``variable=setting`` unless None), once that
    child has applied an event (it has started and set its priority): (serve, child)."""
    database = tmp_path / "t.db"
    keys = create_project(database)
    env = {"TIDINGS_WORKER_MODE": "process"}
    if setting is not None:
        env[variable] = setting
    server = Server(database, **env).start()
    try:
        headers = {"Authorization": f"Bearer {keys['public_key']}"}
        body = [{"name": "E", "external_id": "u"}]
        response = httpx.post(f"{server.url}/api/client/events", json=body, headers=headers)
        assert response.status_code == 204
        server.wait_drained()
        assert server.process is not None
        (child,) = _children(server.process.pid)
        yield server.process.pid, child
    finally:
        server.stop()


@pytest.mark.parametrize(("setting", "added"), [(None, 10), ("0", 0), ("3", 3)])
def test_the_worker_process_runs_below_the_api_in_priority(
    tmp_path: Path, setting: str | None, added: int
) -> None:
    """When API and worker compete for the cores, acknowledgements go first
    (TIDINGS_WORKER_NICE, 10 by default; 0 keeps them equal)."""
    with _serving_one_event(tmp_path, "TIDINGS_WORKER_NICE", setting) as (api, child):
        priority = os.getpriority(os.PRIO_PROCESS, api)
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, priority + added)


def _idle_threads(pid: int) -> list[int]:
    """The threads of ``pid`` in the SCHED_IDLE scheduling class."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[38]) == os.SCHED_IDLE:  # field 41 of stat: the policy
            found.append(int(task.name))
    return found


@pytest.mark.skipif(not IdlePriority.supported(), reason="no SCHED_IDLE round trip here")
@pytest.mark.parametrize(("setting", "idle"), [(None, True), ("0", False)])
def test_the_worker_child_applies_the_log_at_idle_priority_while_it_keeps_up(
    tmp_path: Path, setting: str | None, idle: bool
) -> None:
    with _serving_one_event(tmp_path, "TIDINGS_WORKER_IDLE_LAG", setting) as (api, child):
        # The consumer's thread alone: not the process's main thread, nor the others. It
        # takes the idle class once it has caught up, which a loaded machine may delay.
        deadline = time.monotonic() + 20
        while idle and not _idle_threads(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_idle_threads(child)) == (1 if idle else 0)
        assert child not in _idle_threads(child)
        assert _idle_threads(api) == []  # never the API's threads


def test_a_ctrl_c_stops_serve_and_its_worker_without_a_restart(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the worker child exits first,
    cleanly, and must not be reported as a crash nor started again."""
    database = tmp_path / "t.db"
    keys = create_project(database)
    server = Server(database, TIDINGS_WORKER_MODE="process").start()
    try:
        assert server.process is not None
        body = [{"name": "E", "external_id": "u"}]
        headers = {"Authorization": f"Bearer {keys['public_key']}"}
        assert httpx.post(f"{server.url}/api/client/events", json=body, headers=headers).is_success
        server.wait_drained()  # the worker is up and applying the log
        (child,) = _children(server.process.pid)
        (writer,) = _children(server.process.pid, "tidings.log.writer")
        os.kill(child, signal.SIGINT)
        os.kill(writer, signal.SIGINT)  # ignored: it exits once serve closes its input
        time.sleep(0.2)  # the parent hears it a moment later, as from a terminal
        server.process.send_signal(signal.SIGINT)
        code = server.process.wait(15)
        output = server.stop()
        assert code == 0, output
        assert "restarting" not in output, output
        assert "log writer process exited" not in output, output
        assert not Path(f"/proc/{writer}").exists()
    finally:
        server.stop()  # a failed check above leaves no server behind
