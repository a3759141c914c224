"""What a durable appender pays for sharing its SQLite file with another writer.

The ingest log and the worker's effects live in one SQLite database: one write lock, one
WAL. This script measures the cost of that sharing with raw ``sqlite3`` and nothing of
Tidings: an *appender* commits 20 rows of 250 bytes with ``synchronous=FULL`` (as the
group committer does), pausing 1 ms between commits, for ``--seconds``; meanwhile a
*writer* process commits 1,000 rows of 300 bytes with ``synchronous=OFF`` (as the worker
does) every 5 ms, either into the same database file (``same``) or into another one
(``other``); ``alone`` has no writer. It prints the appender's commits, its
insert-and-commit time and its wait for the write lock (p50/p99).

    .venv/bin/python bench/sqlite_shared_wal.py                 # alone, then same/other twice
    .venv/bin/python bench/sqlite_shared_wal.py same other --seconds 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path


def _writer(path: str, stop: Event, count: Synchronized[int]) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, data TEXT)")
    rows = [("y" * 300,)] * 1000
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO effects (data) VALUES (?)", rows)
        conn.execute("COMMIT")
        count.value += 1
        time.sleep(0.005)
    conn.close()


def _appender(path: str, seconds: float) -> tuple[list[float], list[float]]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB)"
    )
    rows = [(b"x" * 250,)] * 20
    commit_ms: list[float] = []
    wait_ms: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
        conn.executemany("INSERT INTO log (payload) VALUES (?)", rows)
        conn.execute("COMMIT")
        done = time.perf_counter()
        wait_ms.append((locked - started) * 1e3)
        commit_ms.append((done - locked) * 1e3)
        time.sleep(0.001)
        if len(commit_ms) % 200 == 0:  # keep the table small, as trims do
            conn.execute("DELETE FROM log")
    conn.close()
    return commit_ms, wait_ms


def _run(mode: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shared, separate = str(Path(tmp) / "main.db"), str(Path(tmp) / "log.db")
        stop = mp.Event()
        count: Synchronized[int] = mp.Value("i", 0)
        writer = None
        if mode != "alone":
            writer = mp.Process(target=_writer, args=(shared, stop, count))
            writer.start()
            time.sleep(0.5)
        try:
            commit_ms, wait_ms = _appender(shared if mode == "same" else separate, seconds)
        finally:
            stop.set()
            if writer is not None:
                writer.join(30)
                if writer.is_alive():
                    writer.kill()
        commit = statistics.quantiles(commit_ms, n=100)
        wait = statistics.quantiles(wait_ms, n=100)
        print(
            f"{mode:>5}: {len(commit_ms):6,} commits ({count.value:4} writer transactions)  "
            f"insert+commit p50 {commit[49]:.2f} p99 {commit[98]:.2f} ms  "
            f"lock wait p50 {wait[49]:.2f} p99 {wait[98]:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", help="alone, same, other (default: all, twice)")
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args()
    unknown = set(opts.modes) - {"alone", "same", "other"}
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    for mode in opts.modes or ["alone", "same", "other", "same", "other"]:
        _run(mode, opts.seconds)


if __name__ == "__main__":
    main()
