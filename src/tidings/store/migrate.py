"""Schema migrations (alembic), driven programmatically.

``upgrade`` is safe to run any number of times; ``check`` tells a server whether the
database matches the code so that it can refuse to start on a stale or newer schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from tidings.store.database import SerialisedEngine

__all__ = [
    "SchemaState",
    "check",
    "current_revision",
    "declared_for",
    "downgrade",
    "head_revision",
    "upgrade",
]

_SCRIPTS = Path(__file__).with_name("migrations")


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration's id (read once per process: loading the scripts compiles
    every migration file)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine | SerialisedEngine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine | SerialisedEngine, revision: str = "head") -> None:
    config = _config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def downgrade(engine: Engine | SerialisedEngine, revision: str) -> None:
    config = _config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        connection.commit()


class SchemaState:
    CURRENT = "current"
    MISSING = "missing"
    BEHIND = "behind"
    AHEAD = "ahead"


def check(engine: Engine | SerialisedEngine) -> str:
    current = current_revision(engine)
    if current is None:
        return SchemaState.MISSING
    head = head_revision()
    if current == head:
        return SchemaState.CURRENT
    known = {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
    return SchemaState.BEHIND if current in known else SchemaState.AHEAD


def declared_for(dialect_name: str) -> Callable[..., bool]:
    """An alembic ``include_object`` hook: leaves out what ``tables.py`` declares for other
    database kinds only (``info={"dialects": (...)}``), so that comparing the migrated
    schema with the declared one sees no difference."""

    def include(obj: Any, _name: str | None, _type: str, _reflected: bool, _compare: Any) -> bool:
        dialects = getattr(obj, "info", {}).get("dialects")
        return dialects is None or dialect_name in dialects

    return include
