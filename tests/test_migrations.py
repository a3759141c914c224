"""The migrations build exactly the schema the code declares, and go down cleanly."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tidings.store import migrate
from tidings.store.database import open_database
from tidings.store.tables import metadata


def test_migrated_schema_matches_the_tables(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        migrate.upgrade(db.writer)
        with db.reader.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        migrate.downgrade(db.writer, "base")
        with db.reader.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert tables <= {"alembic_version"}
        assert migrate.check(db.writer) == migrate.SchemaState.MISSING
    finally:
        db.dispose()
