"""Every user of a project (or of one list), page by page: the users export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.store.tables import identities, list_members, profiles

__all__ = ["iter_users"]

_CHUNK = 300


def iter_users(
    engine: Engine,
    project_id: int,
    *,
    list_id: int | None = None,
    page_size: int = 1000,
) -> Iterator[dict[str, Any]]:
    """Every profile of the project (or of one list), oldest first."""
    p = profiles.c
    at: tuple[int, str] | None = None
    while True:
        query = sa.select(
            p.id,
            p.external_id,
            p.email,
            p.phone,
            p.timezone,
            p.locale,
            p.data,
            p.created_at,
            p.updated_at,
        ).where(p.project_id == project_id)
        if list_id is not None:
            query = query.where(
                p.id.in_(
                    sa.select(list_members.c.profile_id).where(list_members.c.list_id == list_id)
                )
            )
        if at is not None:
            query = query.where(p.created_at >= at[0], sa.or_(p.created_at > at[0], p.id > at[1]))
        query = query.order_by(p.created_at, p.id).limit(page_size)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
            anonymous = _anonymous_ids(conn, project_id, [r.id for r in rows])
        for row in rows:
            yield {
                "id": row.id,
                "external_id": row.external_id,
                "anonymous_ids": anonymous.get(row.id, []),
                "email": row.email,
                "phone": row.phone,
                "timezone": row.timezone,
                "locale": row.locale,
                "data": row.data or {},
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        if len(rows) < page_size:
            return
        at = (rows[-1].created_at, rows[-1].id)


def _anonymous_ids(conn: Connection, project_id: int, ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for start in range(0, len(ids), _CHUNK):
        for profile_id, value in conn.execute(
            sa.select(identities.c.profile_id, identities.c.value)
            .where(
                identities.c.project_id == project_id,
                identities.c.kind == "anonymous",
                identities.c.profile_id.in_(ids[start : start + _CHUNK]),
            )
            .order_by(identities.c.created_at, identities.c.value)
        ):
            found.setdefault(profile_id, []).append(value)
    return found
