"""Migration 0022: ``ready`` timers left by the earlier bulk firing (their entrance already
moved to its next step) are carried over as ``move`` timers, which run that step."""

from __future__ import annotations

import sqlalchemy as sa

from tests.test_migrations import empty_db  # noqa: F401  (the fixture)
from tidings.store import migrate
from tidings.store.database import Database
from tidings.store.tables_journeys import journey_timers


def test_old_ready_timers_become_move_timers(empty_db: Database) -> None:  # noqa: F811
    db = empty_db
    migrate.upgrade(db.writer, "0021")
    timer = {"project_id": 1, "journey_id": 1, "step_id": 5, "due_at": 10}
    with db.writer.begin() as conn:
        conn.execute(
            sa.insert(journey_timers),
            [
                {**timer, "entrance_id": 1, "kind": "ready"},
                {**timer, "entrance_id": 2, "kind": "ready"},  # has a move already
                {**timer, "entrance_id": 2, "kind": "move"},
                {**timer, "entrance_id": 3, "kind": "run"},
            ],
        )
    migrate.upgrade(db.writer)
    with db.reader.connect() as conn:
        rows = sorted(
            conn.execute(sa.select(journey_timers.c.entrance_id, journey_timers.c.kind)).all()
        )
    assert rows == [(1, "move"), (2, "move"), (3, "run")]
    with db.writer.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM journey_ready")).scalar() == 0
