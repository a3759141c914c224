"""The SQLite WAL stays bounded under a load that never pauses (Database.checkpoint), and
the checkpointer thread ends before the database closes."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_services, make_settings
from tidings.store import database as database_module
from tidings.store.database import Database, open_database


def _wal_after_steady_load(tmp_path: Path) -> list[int]:
    """The WAL's size in pages after each checkpointer round under a load that never
    pauses."""
    db = open_database(f"sqlite:///{tmp_path / 'tidings.db'}")
    with db.writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    stop = threading.Event()
    payload = os.urandom(2_000)

    def write() -> None:  # one writer after another, as the committer and the worker do
        while not stop.is_set():
            with db.writer.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO t (v) VALUES " + ", ".join(["(?)"] * 20), (payload,) * 20
                )

    def read() -> None:  # short read transactions all the time, as the worker's
        while not stop.is_set():
            with db.reader.connect() as conn:
                conn.exec_driver_sql("SELECT count(*) FROM t").one()

    threads = [threading.Thread(target=f) for f in (write, write, read)]
    for thread in threads:
        thread.start()
    try:
        sizes = []
        for _ in range(60):  # the checkpointer's rounds, faster than its 1 s
            stop.wait(0.05)
            db.checkpoint()
            with db.reader.connect() as conn:  # pages in the WAL now
                _, frames, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            sizes.append(frames)
        return sizes
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        db.dispose()


def test_the_wal_is_started_over_under_a_steady_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "WAL_RESTART_FRAMES", 256)  # 1 MB, not 128
    sizes = _wal_after_steady_load(tmp_path)
    # Pages come in between the rounds; without the RESTART the WAL only ever grows (a
    # bound in pages would depend on the machine's speed: the WAL's growth is measured).
    written = sizes[0] + sum(max(0, b - a) for a, b in itertools.pairwise(sizes))
    restarts = sum(b < a for a, b in itertools.pairwise(sizes))
    assert restarts >= 2, f"the WAL was never started over: {sizes}"
    # And it keeps being started over: in the second half of the run too it was small at
    # least once (a WAL that only grows holds at least half of what was written by then).
    # Not its largest size: one stall of the machine at the wrong moment can make that
    # large, and did (72% of the pages written, once in CI).
    late = sizes[len(sizes) // 2 :]
    assert min(late) < written / 4, f"no restart in the second half: {sizes} of {written}"
    print(f"largest WAL: {max(sizes)} pages of {written} written; {restarts} restarts")


def test_stop_waits_for_a_checkpoint_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpointer thread is joined before the database closes: a checkpoint that
    ran on past ``stop()`` reopened the writer lock file after it was closed (and failed
    once the directory was gone)."""
    order: list[str] = []
    started = threading.Event()

    def slow_checkpoint(_self: Database) -> None:
        started.set()
        time.sleep(0.3)
        order.append("checkpoint")

    dispose = Database.dispose

    def logged_dispose(self: Database) -> None:
        order.append("dispose")
        dispose(self)

    monkeypatch.setattr(Database, "checkpoint", slow_checkpoint)
    monkeypatch.setattr(Database, "dispose", logged_dispose)
    services = make_services(make_settings(tmp_path, run_worker=False))
    services.start()
    assert started.wait(5), "the checkpointer did not run"
    services.stop()
    # Every checkpoint (of the database and of the log file) before either is closed.
    assert order[0] == "checkpoint" and order.count("dispose") == 2
    assert order[order.index("dispose") :] == ["dispose", "dispose"], order
