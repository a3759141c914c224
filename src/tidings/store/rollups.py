"""The SQL that keeps the event rollups true (tables in store/tables_reporting.py).

Called inside the pipeline's batch transaction (``reporting.rollups.RollupHook``) and by
retention (store/retention.py). Every change is expressed on ``event_user_days`` first
(one row per project, event name, UTC day and profile) and then carried to
``event_rollups`` (one row per project, event name and day), whose ``users`` is the number
of ``event_user_days`` rows of its key:

- new events: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` tells which user-days are new
  (with several workers on PostgreSQL the unique key decides, not a read before the
  write), the others are incremented, and the rollups get the counts and new users;
- a merge moves the absorbed profile's user-days to the survivor, folding them into the
  survivor's own where both have one (one user fewer for that key);
- an erasure subtracts the profile's user-days and recomputes first/last seen of the keys
  it touched from the user-days left;
- retention drops the rows of days before the cutoff's day and recomputes that day.

Keys are written in sorted order, so that two workers touching the same rows lock them
in the same order and never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tidings.store.tables import events
from tidings.store.tables_reporting import event_rollups, event_user_days

__all__ = [
    "DAY",
    "add_events",
    "day_of",
    "day_sql",
    "erase_profile",
    "merge_profiles",
    "rebuild_day",
    "trim_before",
]

DAY = 86_400_000_000  # microseconds
_CHUNK = 300

UserDayKey = tuple[int, str, int, str]  # project, name, day, profile
RollupKey = tuple[int, int, str]  # project, day, name


def day_of(micros: int) -> int:
    """The UTC midnight (microseconds) that starts the day of ``micros``."""
    return micros - micros % DAY


def day_sql(column: Any) -> Any:
    """``day_of`` in SQL: floor to the UTC day on both databases (``%`` truncates towards
    zero there, so times before 1970 need the second modulo)."""
    return column - ((column % DAY) + DAY) % DAY


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _least(column: Any, value: Any) -> Any:
    return sa.case((column > value, value), else_=column)


def _greatest(column: Any, value: Any) -> Any:
    return sa.case((column < value, value), else_=column)


def add_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Count newly inserted events (rows as inserted into ``events``)."""
    if not rows:
        return
    per_user: dict[UserDayKey, list[int]] = {}
    for row in rows:
        created = row["created_at"]
        key = (row["project_id"], row["name"], day_of(created), row["profile_id"])
        found = per_user.get(key)
        if found is None:
            per_user[key] = [1, created, created]
        else:
            found[0] += 1
            found[1] = min(found[1], created)
            found[2] = max(found[2], created)
    keys = sorted(per_user)
    u = event_user_days.c
    insert = _insert(conn, event_user_days)
    inserted: set[UserDayKey] = set()
    statement = insert.on_conflict_do_nothing().returning(u.project_id, u.name, u.day, u.profile_id)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        values = [
            {
                "project_id": k[0],
                "name": k[1],
                "day": k[2],
                "profile_id": k[3],
                "count": per_user[k][0],
                "first_seen_at": per_user[k][1],
                "last_seen_at": per_user[k][2],
            }
            for k in chunk
        ]
        inserted.update(tuple(r) for r in conn.execute(statement.values(values)))
    existing = [k for k in keys if k not in inserted]
    if existing:
        conn.execute(
            sa.update(event_user_days)
            .where(
                u.project_id == sa.bindparam("k_project"),
                u.name == sa.bindparam("k_name"),
                u.day == sa.bindparam("k_day"),
                u.profile_id == sa.bindparam("k_profile"),
            )
            .values(
                count=u.count + sa.bindparam("n"),
                first_seen_at=_least(u.first_seen_at, sa.bindparam("first")),
                last_seen_at=_greatest(u.last_seen_at, sa.bindparam("last")),
            ),
            [
                {
                    "k_project": k[0],
                    "k_name": k[1],
                    "k_day": k[2],
                    "k_profile": k[3],
                    "n": per_user[k][0],
                    "first": per_user[k][1],
                    "last": per_user[k][2],
                }
                for k in existing
            ],
        )
    per_key: dict[RollupKey, list[int]] = {}
    for key in keys:
        count, first, last = per_user[key]
        rollup = (key[0], key[2], key[1])
        new = 1 if key in inserted else 0
        found = per_key.get(rollup)
        if found is None:
            per_key[rollup] = [count, new, first, last]
        else:
            found[0] += count
            found[1] += new
            found[2] = min(found[2], first)
            found[3] = max(found[3], last)
    r = event_rollups.c
    upsert = _insert(conn, event_rollups)
    upsert = upsert.on_conflict_do_update(
        index_elements=[r.project_id, r.day, r.name],
        set_={
            "count": r.count + upsert.excluded.count,
            "users": r.users + upsert.excluded.users,
            "first_seen_at": _least(r.first_seen_at, upsert.excluded.first_seen_at),
            "last_seen_at": _greatest(r.last_seen_at, upsert.excluded.last_seen_at),
        },
    )
    ordered = sorted(per_key)
    for start in range(0, len(ordered), _CHUNK):
        conn.execute(
            upsert.values(
                [
                    {
                        "project_id": k[0],
                        "day": k[1],
                        "name": k[2],
                        "count": per_key[k][0],
                        "users": per_key[k][1],
                        "first_seen_at": per_key[k][2],
                        "last_seen_at": per_key[k][3],
                    }
                    for k in ordered[start : start + _CHUNK]
                ]
            )
        )


def _user_days_of(conn: Connection, project_id: int, profile_id: str) -> list[Any]:
    u = event_user_days.c
    return list(
        conn.execute(
            sa.select(u.name, u.day, u.count, u.first_seen_at, u.last_seen_at)
            .where(u.project_id == project_id, u.profile_id == profile_id)
            .order_by(u.name, u.day)
        ).all()
    )


def merge_profiles(conn: Connection, project_id: int, absorbed: str, survivor: str) -> None:
    """``absorbed`` became part of ``survivor``: its user-days are the survivor's now."""
    u = event_user_days.c
    r = event_rollups.c
    moved = _user_days_of(conn, project_id, absorbed)
    if not moved:
        return
    theirs = {(row.name, row.day) for row in _user_days_of(conn, project_id, survivor)}
    for row in moved:
        mine = sa.and_(u.project_id == project_id, u.name == row.name, u.day == row.day)
        if (row.name, row.day) in theirs:
            conn.execute(
                sa.update(event_user_days)
                .where(mine, u.profile_id == survivor)
                .values(
                    count=u.count + row.count,
                    first_seen_at=_least(u.first_seen_at, row.first_seen_at),
                    last_seen_at=_greatest(u.last_seen_at, row.last_seen_at),
                )
            )
            conn.execute(sa.delete(event_user_days).where(mine, u.profile_id == absorbed))
            conn.execute(
                sa.update(event_rollups)
                .where(r.project_id == project_id, r.day == row.day, r.name == row.name)
                .values(users=r.users - 1)
            )
        else:
            conn.execute(
                sa.update(event_user_days)
                .where(mine, u.profile_id == absorbed)
                .values(profile_id=survivor)
            )


def erase_profile(conn: Connection, project_id: int, profile_id: str) -> None:
    """The profile and its events are gone: so are its user-days and their counts."""
    u = event_user_days.c
    r = event_rollups.c
    gone = _user_days_of(conn, project_id, profile_id)
    if not gone:
        return
    conn.execute(
        sa.delete(event_user_days).where(u.project_id == project_id, u.profile_id == profile_id)
    )
    for row in sorted(gone, key=lambda g: (g.day, g.name)):
        key = sa.and_(r.project_id == project_id, r.day == row.day, r.name == row.name)
        conn.execute(
            sa.update(event_rollups).where(key).values(count=r.count - row.count, users=r.users - 1)
        )
        _refresh_edges(conn, project_id, row.day, row.name)


def _refresh_edges(conn: Connection, project_id: int, day: int, name: str) -> None:
    """First/last seen of one rollup from its user-days (or the row gone if none is left)."""
    u = event_user_days.c
    r = event_rollups.c
    key = sa.and_(r.project_id == project_id, r.day == day, r.name == name)
    first, last = conn.execute(
        sa.select(sa.func.min(u.first_seen_at), sa.func.max(u.last_seen_at)).where(
            u.project_id == project_id, u.name == name, u.day == day
        )
    ).one()
    if first is None:
        conn.execute(sa.delete(event_rollups).where(key))
    else:
        conn.execute(
            sa.update(event_rollups).where(key).values(first_seen_at=first, last_seen_at=last)
        )


def rebuild_day(conn: Connection, day: int, project_ids: Iterable[int] | None = None) -> None:
    """Compute one UTC day's rollups again from the events (after retention deleted part
    of it). On PostgreSQL the rollup tables are locked against the pipeline's writes for
    the transaction, so that a batch either committed before (its events are counted
    here) or writes after (its increments land on the rebuilt rows)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "LOCK TABLE event_rollups, event_user_days IN SHARE ROW EXCLUSIVE MODE"
        )
    u = event_user_days.c
    r = event_rollups.c
    scope_u: list[Any] = [u.day == day]
    scope_r: list[Any] = [r.day == day]
    scope_e: list[Any] = [events.c.created_at >= day, events.c.created_at < day + DAY]
    if project_ids is not None:
        ids = sorted(set(project_ids))
        scope_u.append(u.project_id.in_(ids))
        scope_r.append(r.project_id.in_(ids))
        scope_e.append(events.c.project_id.in_(ids))
    conn.execute(sa.delete(event_user_days).where(*scope_u))
    conn.execute(sa.delete(event_rollups).where(*scope_r))
    e = events.c
    conn.execute(
        sa.insert(event_user_days).from_select(
            ["project_id", "name", "day", "profile_id", "count", "first_seen_at", "last_seen_at"],
            sa.select(
                e.project_id,
                e.name,
                sa.literal(day, sa.BigInteger),
                e.profile_id,
                sa.func.count(),
                sa.func.min(e.created_at),
                sa.func.max(e.created_at),
            )
            .where(*scope_e)
            .group_by(e.project_id, e.name, e.profile_id),
        )
    )
    conn.execute(
        sa.insert(event_rollups).from_select(
            ["project_id", "day", "name", "count", "users", "first_seen_at", "last_seen_at"],
            sa.select(
                u.project_id,
                sa.literal(day, sa.BigInteger),
                u.name,
                sa.func.sum(u.count),
                sa.func.count(),
                sa.func.min(u.first_seen_at),
                sa.func.max(u.last_seen_at),
            )
            .where(*scope_u)
            .group_by(u.project_id, u.name),
        )
    )


def trim_before(conn: Connection, day: int) -> None:
    """Delete the user-days and rollups of days before ``day``. The user-days go per
    (project, name) of the rollups concerned, each a range of the primary key."""
    u = event_user_days.c
    r = event_rollups.c
    pairs = conn.execute(
        sa.select(r.project_id, r.name).where(r.day < day).distinct().order_by(r.project_id, r.name)
    ).all()
    for project_id, name in pairs:
        conn.execute(
            sa.delete(event_user_days).where(
                u.project_id == project_id, u.name == name, u.day < day
            )
        )
    conn.execute(sa.delete(event_rollups).where(r.day < day))
