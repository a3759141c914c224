"""The ingest log table: several appenders at once never make a reader skip an entry."""

from __future__ import annotations

import threading

from tidings.domain.ingest import AppendRequest, LogEntry
from tidings.log.database import DatabaseLog
from tidings.settings import Settings
from tidings.store.database import open_database

from ..conftest import make_services

APPENDERS = 4
PER_APPENDER = 150


def _entry(n: int) -> LogEntry:
    return LogEntry(project_id=1, kind="event", partition=n % 8, payload={"n": n}, accepted_at=n)


def test_concurrent_appenders_never_make_a_tailing_reader_skip(settings: Settings) -> None:
    """Separate processes append at once (here: separate engines, as separate API nodes
    would). A reader that keeps its position as the highest sequence it has seen must
    still see every entry: on PostgreSQL a later sequence number can otherwise become
    visible before an earlier one whose transaction commits later."""
    make_services(settings).close()  # migrate
    url = settings.database_url_value
    logs = []
    for _ in range(APPENDERS):
        db = open_database(url, sqlite_synchronous="NORMAL")
        logs.append((db, DatabaseLog(db.writer, db.reader, 8)))
    reader_db = open_database(url)
    reader = DatabaseLog(reader_db.writer, reader_db.reader, 8)
    seen: list[int] = []
    done = threading.Event()

    def tail() -> None:
        position = 0
        while True:
            finished = done.is_set()
            records = reader.read_all(position, 1000)
            for record in records:
                seen.append(record.payload["n"])
                position = record.seq
            if finished and not records:
                return

    def append(index: int) -> None:
        _db, log = logs[index]
        for i in range(PER_APPENDER):
            log.append([AppendRequest([_entry(index * PER_APPENDER + i)])])

    tailer = threading.Thread(target=tail)
    tailer.start()
    appenders = [threading.Thread(target=append, args=(i,)) for i in range(APPENDERS)]
    for thread in appenders:
        thread.start()
    for thread in appenders:
        thread.join(120)
    done.set()
    tailer.join(60)
    for db, _ in logs:
        db.dispose()
    reader_db.dispose()
    total = APPENDERS * PER_APPENDER
    missing = set(range(total)) - set(seen)
    assert not missing, f"the reader skipped {len(missing)} of {total} entries"
    assert len(seen) == total
