"""The first ten minutes of a new user: start-up failures they can cause end in one clear
line (cause and fix) and a non-zero exit, never a traceback; commands other than
``serve`` and ``migrate`` create no database; Ctrl-C at any moment is quiet; the help and
the scripts say what a user needs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.server import Server, cli_env, free_port, run_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *words: str) -> str:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert "listening" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for word in words:
        assert word in lines[0], output
    return lines[0]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_database_folder_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "var" / "lib" / "tidings"
    for command in (["serve", "--port", str(free_port())], ["migrate"], ["key", "revoke"]):
        result = (
            run_cli(missing / "a.db", *command, "--id", "1")
            if command[0] == "key"
            else (run_cli(missing / "a.db", *command))
        )
        assert_one_line_failure(result, str(missing), "mkdir -p")
    assert not missing.exists()


def test_commands_other_than_serve_and_migrate_create_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    csv = tmp_path / "members.csv"
    csv.write_text("external_id\nu_1\n")
    for command in (
        ["key", "revoke", "--id", "1"],
        ["key", "create", "--project", "1"],
        ["project", "create", "--name", "Shop"],
        ["import", str(csv), "--project", "1", "--list", "1"],
        ["worker"],
        ["api", "--port", str(free_port())],
    ):
        result = run(command, env, tmp_path)  # the default database: ./tidings.db
        assert_one_line_failure(result, str(tmp_path / "tidings.db"), "tidings migrate")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["members.csv"], command


def test_a_port_in_use_fails_before_saying_listening(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(tmp_path / "t.db", "serve", "--port", str(port))
    assert_one_line_failure(result, f"port {port}", "in use", "--port")


def test_an_unreachable_database_server_is_named_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://tidings:s3cret@127.0.0.1:{port}/tidings"
    for command in (["migrate"], ["serve", "--port", str(free_port())], ["worker"]):
        line = assert_one_line_failure(
            run_cli(url, *command), "cannot reach the database", f"127.0.0.1:{port}"
        )
        assert "s3cret" not in line


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    assert run_cli(database, "migrate").returncode == 0
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    for command in (
        ["serve", "--port", str(free_port())],
        ["migrate"],
        ["key", "revoke", "--id", "1"],
    ):
        assert_one_line_failure(run_cli(database, *command), "newer", "upgrade Tidings")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="runs a command as another user: needs root and setpriv",
)
def test_a_database_file_it_may_not_write_is_named() -> None:
    # Not under pytest's temporary folder, which only its owner may enter.
    folder = Path(tempfile.mkdtemp(prefix="tidings-ro-"))
    folder.chmod(0o755)  # owned by root: nobody may write the file or the folder
    database = folder / "t.db"
    assert run_cli(database, "migrate").returncode == 0
    database.chmod(0o644)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for command in (["key", "revoke", "--id", "1"], ["serve", "--port", str(free_port())]):
        result = subprocess.run(
            [*as_nobody, sys.executable, "-m", "tidings", *command],
            env=cli_env(database),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if "Permission denied" in result.stderr and "python" in result.stderr.lower():
            pytest.skip(f"the interpreter is not readable by nobody: {result.stderr}")
        assert_one_line_failure(result, str(database), "permission denied")
    shutil.rmtree(folder)


def test_a_later_start_says_how_to_make_new_keys(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    first = Server(database).start()
    output = first.stop()
    assert "public key: pk_" in output
    again = Server(database).start()
    output = again.stop()
    assert "public key: pk_" not in output
    assert "key create --project 1 --scope public" in output, output
    assert "Traceback" not in output


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("moment", ["importing", "children starting"])
def test_a_ctrl_c_during_the_start_is_quiet(tmp_path: Path, moment: str) -> None:
    """A Ctrl-C reaches the whole foreground process group (here: sent to it) while serve,
    or the worker and log writer children it has just started, still import their
    modules. (Within the interpreter's own first few tens of milliseconds, before any
    Tidings code runs, Python itself may still print its KeyboardInterrupt traceback.)"""
    command = Path(sys.executable).with_name("tidings")  # what scripts/serve runs
    env = cli_env(tmp_path / "t.db", TIDINGS_WORKER_MODE="process", TIDINGS_LOG_WRITER="process")
    process = subprocess.Popen(
        [str(command), "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        if moment == "importing":
            time.sleep(0.15)
        else:
            deadline = time.monotonic() + 60
            while len(_children(process.pid)) < 2 and process.poll() is None:
                assert time.monotonic() < deadline, "serve started no children"
                time.sleep(0.005)
        os.killpg(process.pid, signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "Traceback" not in output, output
    assert "restarting" not in output, output


def test_help_shows_no_type_after_plain_flags() -> None:
    for command in (["project", "create"], ["key", "revoke"], ["serve"], ["migrate"]):
        result = subprocess.run(
            [sys.executable, "-m", "tidings", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout, result.stdout
        assert "--help" in result.stdout


def test_scripts_tidings_reaches_the_command_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "t.db")
    result = subprocess.run(
        [str(ROOT / "scripts" / "tidings"), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"schema at revision \d+", result.stdout + result.stderr)


def test_lock_files_beside_the_database_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("tidings.db.worker-lock", "tidings.db.writer-lock", "tidings-log.db-wal"):
        checked = subprocess.run(
            ["git", "check-ignore", "-q", name], cwd=ROOT, check=False, timeout=30
        )
        assert checked.returncode == 0, f"{name} is not ignored"
