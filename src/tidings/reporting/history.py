"""A list's size per UTC day, from its enter/leave facts (``list_changes``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.reporting.queries import day_text
from tidings.store.rollups import DAY, day_sql
from tidings.store.tables import list_changes

__all__ = ["list_history"]


def list_history(
    conn: Connection,
    project_id: int,
    list_id: int,
    start: int,
    end: int,
    *,
    size_at_end: int | None = None,
) -> list[dict[str, Any]]:
    """``[{day, size, entered, left}]`` for each UTC day that meets ``[start, end)``:
    ``size`` is the number of members at the end of the day (or at ``end``, for the
    last), from the enter/leave facts of ``list_changes``.

    ``size_at_end``: the members at ``end`` when the caller knows it (the list's own
    counter, for a window that ends now): the sizes are then counted back from it and
    only the window's facts are read, not every fact since the list began."""
    c = list_changes.c
    sign = sa.case((c.change == "entered", 1), else_=-1)
    scope = [c.project_id == project_id, c.list_id == list_id]
    day = day_sql(c.created_at)
    rows = conn.execute(
        sa.select(
            day.label("day"),
            sa.func.sum(sa.case((c.change == "entered", 1), else_=0)).label("entered"),
            sa.func.sum(sa.case((c.change == "entered", 0), else_=1)).label("left"),
        )
        .where(*scope, c.created_at >= start, c.created_at < end)
        .group_by(day)
    ).all()
    by_day = {int(r.day): (int(r.entered), int(r.left)) for r in rows}
    if size_at_end is not None:
        size = size_at_end - sum(entered - left for entered, left in by_day.values())
    else:
        size = int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(sign), 0)).where(
                    *scope, c.created_at < start
                )
            ).scalar_one()
        )
    history = []
    first = start - start % DAY
    for moment in range(first, end, DAY) if end > start else ():
        entered, left = by_day.get(moment, (0, 0))
        size += entered - left
        history.append({"day": day_text(moment), "size": size, "entered": entered, "left": left})
    return history
