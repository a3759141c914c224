"""Pages of messaging's lists (providers, campaigns, templates, a campaign's sends): newest
first, by id, with cursors both ways.

A cursor is ``["n", id]`` (older rows: ids below ``id``) or ``["p", id]`` (newer rows: ids
above ``id``, read upwards and answered newest first), through ``store.cursors`` (a
forged one is a 400). ``nextCursor`` is there when older rows exist, ``prevCursor`` when
newer ones do: following ``nextCursor`` then ``prevCursor`` gives back the same page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.store import cursors

__all__ = ["Page", "id_page"]


@dataclass(frozen=True, slots=True)
class Page:
    results: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    limit: int


def id_page(
    conn: Connection, query: sa.Select[Any], id_column: Any, limit: int, cursor: str | None
) -> Page:
    """One page of ``query`` (already filtered), ordered by ``id_column`` descending."""
    position = cursors.decode(cursor, tuple[Literal["n", "p"], int]) if cursor else None
    backwards = position is not None and position[0] == "p"
    if position is None:
        ordered = query.order_by(id_column.desc())
    elif backwards:
        ordered = query.where(id_column > position[1]).order_by(id_column.asc())
    else:
        ordered = query.where(id_column < position[1]).order_by(id_column.desc())
    rows = list(conn.execute(ordered.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    ids = [int(r._mapping[id_column.name]) for r in rows]
    top = ids[0] if ids else (position[1] if position else None)
    bottom = ids[-1] if ids else (position[1] if position else None)

    def exists(condition: Any) -> bool:
        probe = query.with_only_columns(id_column).where(condition).limit(1)
        return conn.execute(probe).first() is not None

    if backwards:
        has_prev = more
        has_next = bottom is not None and exists(id_column < bottom)
    else:
        has_next = more
        has_prev = position is not None and top is not None and exists(id_column > top)
    return Page(
        results=[dict(r._mapping) for r in rows],
        next_cursor=cursors.encode("n", bottom) if has_next and bottom is not None else None,
        prev_cursor=cursors.encode("p", top) if has_prev and top is not None else None,
        limit=limit,
    )
