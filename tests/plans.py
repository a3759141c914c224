"""The database's plans for the queries a call runs, to check that they use an index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def plans_of(engine: Engine, call: Callable[[], Any], marker: str) -> list[str]:
    """Run ``call``; the plan of each statement it ran on ``engine`` that contains
    ``marker``, as SQLite (EXPLAIN QUERY PLAN) or PostgreSQL (EXPLAIN, with sequential
    scans discouraged: the test tables are too small for an index to win otherwise) gives
    it."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    plans = []
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in statements:
            explain = "EXPLAIN QUERY PLAN" if sqlite else "EXPLAIN"
            rows = conn.exec_driver_sql(f"{explain} {statement}", parameters)
            plans.append(" ".join(str(row[-1] if sqlite else row[0]) for row in rows))
    return plans
