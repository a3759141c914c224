"""CPU an idle `tidings serve` costs: no requests at all.

    .venv/bin/python bench/idle.py [--seconds S] [--warmup S] [CONFIG ...]

Each CONFIG is a comma-separated list of ``TIDINGS_*=value`` settings for one server (an
empty string, or none given: the defaults), e.g.::

    .venv/bin/python bench/idle.py "" "TIDINGS_WORKER_IDLE_AFTER=0"

Starts one `tidings serve` per config (a fresh SQLite database each, one after the other),
waits for its health check and ``--warmup`` seconds, then reads the CPU time (user +
system, from /proc) of the serve process and every process under it (the worker child,
the log writer child) over ``--seconds``. Prints each process's CPU-seconds and the total
as a share of one core, against the ceiling of 1% of a core (Linux only).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CEILING = 0.01  # of one core
TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _cpu(pid: int) -> float:
    """User + system CPU-seconds of one process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _name(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode() for a in args if a]
    for command in ("serve", "worker"):
        if command in words:
            return command
    if any("writer" in w for w in words):
        return "log writer"
    return " ".join(words[1:3])[:40]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(config: str, seconds: float, warmup: float) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="tidings-idle-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env["TIDINGS_DATABASE_URL"] = f"sqlite:///{workdir / 'tidings.db'}"
    env.update(item.split("=", 1) for item in config.split(",") if item)
    port = _free_port()
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    names: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"serve did not start: see {workdir / 'serve.log'}")
            time.sleep(0.1)
        time.sleep(warmup)
        pids = _tree(server.pid)
        names = {pid: _name(pid) for pid in pids}
        before = {pid: _cpu(pid) for pid in pids}
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        used = {pid: _cpu(pid) - before[pid] for pid in pids}
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    total = sum(used.values())
    share = total / elapsed
    print(f"config {config or '(defaults)'}: {total:.2f} CPU-s in {elapsed:.1f} s")
    for pid, cpu in used.items():
        print(f"  {names[pid]:<12} pid {pid}: {cpu:.2f} CPU-s")
    print(f"  total {share:.2%} of a core; ceiling {CEILING:.0%}: {share / CEILING:.2f}x")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", metavar="CONFIG")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    for config in args.configs or [""]:
        measure(config, args.seconds, args.warmup)


if __name__ == "__main__":
    main()
