"""The migrations build exactly the schema the code declares, on both databases, and go
down cleanly; the events rebuild of 0004 keeps every event, up, down and up again."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import _admin_engine, postgres_url_or_skip
from tidings.store import migrate
from tidings.store.database import Database, open_database
from tidings.store.tables import metadata

DAY = 86_400_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own, with no schema (these tests go down to nothing)."""
    if request.param == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
        yield db
        db.dispose()
        return
    base = postgres_url_or_skip()
    name = f"tidings_migrations_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = _admin_engine(base)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    db = open_database(
        sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    )
    try:
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _not_a_partition(name: str | None, type_: str, _parents: Any) -> bool:
    """Partitions of ``events`` (PostgreSQL) are made at run time, not declared."""
    return not (type_ == "table" and name is not None and name.startswith("events_"))


# SQLite's reflection leaves expression indexes out, so alembic cannot compare them there;
# the test checks that one itself.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrated_schema_matches_the_tables(empty_db: Database) -> None:
    db = empty_db
    migrate.upgrade(db.writer)
    with db.reader.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": _not_a_partition,
                "include_object": migrate.declared_for(conn.dialect.name),
            },
        )
        assert compare_metadata(context, metadata) == []
        inspector = sa.inspect(conn)
        # Not compared by alembic: primary keys, and partitioning.
        for table in metadata.sorted_tables:
            declared = [c.name for c in table.primary_key.columns]
            reflected = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert reflected == declared, table.name
        log_indexes = {i["name"] for i in inspector.get_indexes("ingest_log")}
        if db.writer.dialect.name == "postgresql":  # per-partition reads of several workers
            assert log_indexes == {"ix_ingest_log_partition_seq"}
        else:  # one consumer reads in position order; the index only slowed appends
            assert log_indexes == set()
            lower_email = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_profiles_project_lower_email'"
            ).scalar()
            assert lower_email is not None and "(project_id, lower(email))" in lower_email
        if db.writer.dialect.name == "postgresql":
            key = conn.exec_driver_sql("SELECT pg_get_partkeydef('events'::regclass)").scalar()
            assert key == "RANGE (created_at)"
            using = {
                i["name"]: i["dialect_options"].get("postgresql_using")
                for i in inspector.get_indexes("events")
            }
            assert using["ix_events_created_at"] == "brin"
    migrate.downgrade(db.writer, "base")
    with db.reader.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert tables <= {"alembic_version"}
    assert migrate.check(db.writer) == migrate.SchemaState.MISSING


def _events_at_0003(now: int) -> list[dict[str, Any]]:
    ages = {"today": 0, "last-month": 35, "last-year": 300, "long-ago": 5000, "ahead": -20}
    return [
        {
            "id": f"evt_{name}",
            "project_id": 1,
            "profile_id": "prf_1",
            "message_id": name,
            "name": "Viewed",
            "data": '{"n": 1}',
            "created_at": now - days * DAY,
            "received_at": now,
        }
        for name, days in ages.items()
    ]


def _events(conn: sa.Connection) -> list[tuple[str, str, int]]:
    rows = conn.exec_driver_sql("SELECT id, message_id, created_at FROM events ORDER BY id")
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_events_survive_upgrade_downgrade_upgrade(empty_db: Database) -> None:
    """With data: 0003 → 0004 → 0003 → 0004. On PostgreSQL each event lands in its month's
    partition (past months that hold events get one), the rest in the default."""
    db = empty_db
    postgres = db.writer.dialect.name == "postgresql"
    now = time.time_ns() // 1000
    migrate.upgrade(db.writer, "0003")
    rows = _events_at_0003(now)
    insert = sa.text(
        "INSERT INTO events (id, project_id, profile_id, message_id, name, data, created_at, "
        "received_at) VALUES (:id, :project_id, :profile_id, :message_id, :name, "
        + ("CAST(:data AS JSONB)" if postgres else ":data")
        + ", :created_at, :received_at)"
    )
    with db.writer.begin() as conn:
        conn.execute(insert, rows)
        before = _events(conn)

    def month(days: int) -> str:
        moment = datetime.fromtimestamp((now - days * DAY) / 1e6, UTC)
        return f"events_{moment.year:04d}{moment.month:02d}"

    for _ in range(2):
        migrate.upgrade(db.writer)
        with db.reader.connect() as conn:
            assert _events(conn) == before
            ids = conn.exec_driver_sql("SELECT message_id FROM event_message_ids").scalars()
            assert sorted(ids) == sorted(r["message_id"] for r in rows)
            if postgres:
                where = dict(
                    conn.exec_driver_sql(
                        "SELECT message_id, tableoid::regclass::text FROM events"
                    ).all()
                )
                assert where == {
                    "today": month(0),
                    "last-month": month(35),
                    "last-year": month(300),
                    "long-ago": "events_default",
                    "ahead": month(-20),
                }
        with db.writer.begin() as conn:  # a retry stored again after the retention window
            retried = {**rows[3], "id": "evt_long-ago-again", "created_at": now - DAY}
            conn.execute(insert, [retried])
        migrate.downgrade(db.writer, "0003")
        with db.reader.connect() as conn:
            assert _events(conn) == before  # the earlier copy of the message id is kept
            assert "event_message_ids" not in sa.inspect(conn).get_table_names()
            unique = sa.inspect(conn).get_unique_constraints("events")
            assert [u["column_names"] for u in unique] == [["project_id", "message_id"]]


def test_instance_secrets_fold_into_installation_secrets(empty_db: Database) -> None:
    """0018: a key kept in ``instance_secrets`` moves to ``installation_secrets`` (unless
    that has one of the same name), the table goes; downgrading brings the table back."""
    db = empty_db
    migrate.upgrade(db.writer, "0017")
    with db.writer.begin() as conn:
        for table, name, value in (
            ("instance_secrets", "old_key", "from-instance"),
            ("instance_secrets", "tracking_key", "loser"),
            ("installation_secrets", "tracking_key", "kept"),
        ):
            conn.execute(
                sa.text(f"INSERT INTO {table} (name, value, created_at) VALUES (:n, :v, 1)"),
                {"n": name, "v": value},
            )
    migrate.upgrade(db.writer, "0018")
    with db.reader.connect() as conn:
        assert "instance_secrets" not in sa.inspect(conn).get_table_names()
        kept = dict(conn.exec_driver_sql("SELECT name, value FROM installation_secrets").all())
    assert kept == {"old_key": "from-instance", "tracking_key": "kept"}
    migrate.downgrade(db.writer, "0017")
    with db.reader.connect() as conn:
        assert "instance_secrets" in sa.inspect(conn).get_table_names()
    migrate.upgrade(db.writer)
