"""The SQL that keeps the event rollups true (tables in store/tables_reporting.py).

Called inside the pipeline's batch transaction (``reporting.rollups.RollupHook``) and by
retention (store/retention.py). Every change is expressed on ``event_user_days`` first
(one row per project, event name, UTC day and profile) and then carried to
``event_rollups`` (one row per project, event name and day), whose ``users`` is the number
of ``event_user_days`` rows of its key:

- new events: one upsert of the batch's user-days ``… ON CONFLICT DO UPDATE … RETURNING
  count`` tells which are new (their count is the batch's own; with several workers on
  PostgreSQL the unique key decides, not a read before the write), and the rollups get
  the counts and new users;
- a merge moves the absorbed profile's user-days to the survivor, folding them into the
  survivor's own where both have one (one user fewer for that key);
- an erasure subtracts the profile's user-days and recomputes first/last seen of the keys
  it touched from the user-days left;
- retention drops the rows of days before the cutoff's day and recomputes that day.

Keys are written in sorted order, so that two workers touching the same rows lock them
in the same order and never deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.store.bulk import BulkInsert
from tidings.store.tables import events
from tidings.store.tables_reporting import event_rollups, event_user_days, event_user_last

__all__ = [
    "DAY",
    "add_events",
    "day_of",
    "day_sql",
    "erase_profile",
    "merge_profiles",
    "rebuild_all",
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


def _least(column: Any, value: Any) -> Any:
    return sa.case((column > value, value), else_=column)


def _greatest(column: Any, value: Any) -> Any:
    return sa.case((column < value, value), else_=column)


_USER_DAY_COLUMNS = (
    "project_id",
    "name",
    "day",
    "profile_id",
    "count",
    "first_seen_at",
    "last_seen_at",
)
_ROLLUP_COLUMNS = ("project_id", "day", "name", "count", "users", "first_seen_at", "last_seen_at")


class _Unnest:
    """PostgreSQL: ``INSERT … SELECT * FROM unnest(<one array per column>) …``, one
    statement and one parameter per column whatever the rows: psycopg spends longer
    parsing a multi-row ``VALUES`` of a few hundred rows than the server takes to run it."""

    def __init__(self, table: str, columns: Sequence[tuple[str, str]], suffix: str) -> None:
        arrays = ", ".join(f"%s::{kind}[]" for _, kind in columns)
        names = ", ".join(name for name, _ in columns)
        self._sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {suffix}"
        self._width = len(columns)

    def statements(self, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        if rows:
            yield self._sql, tuple(list(column) for column in zip(*rows, strict=True))

    def __call__(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        for sql, params in self.statements(rows):
            conn.exec_driver_sql(sql, params)


_TYPES = {
    "project_id": "integer",
    "name": "text",
    "day": "bigint",
    "profile_id": "text",
    "count": "bigint",
    "users": "bigint",
    "first_seen_at": "bigint",
    "last_seen_at": "bigint",
    "last_day": "bigint",
}


def _writer(
    dialect: str, paramstyle: str, table: str, columns: Sequence[str], suffix: str
) -> BulkInsert | _Unnest:
    if dialect == "postgresql":
        return _Unnest(table, [(c, _TYPES[c]) for c in columns], suffix)
    return BulkInsert(dialect, paramstyle, table, columns, suffix=suffix)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The multi-row statements of ``add_events`` for one dialect (store/bulk.py: one
    driver-level INSERT per few hundred rows, not one per row, nor a statement that
    SQLAlchemy compiles again for every batch)."""

    # User-days: inserted, or added to. RETURNING gives each row's count after the write,
    # which equals what this batch adds only for the rows it created (a stored row counts
    # at least one event already): those are the new users of their day.
    user_days: BulkInsert | _Unnest
    rollup: BulkInsert | _Unnest
    last: BulkInsert | _Unnest  # event_user_last: written only when the day moves on

    @classmethod
    def build(cls, dialect: str, paramstyle: str) -> _Statements:
        low, high = ("MIN", "MAX") if dialect == "sqlite" else ("LEAST", "GREATEST")

        def edges(table: str) -> str:
            return (
                f"first_seen_at = {low}({table}.first_seen_at, excluded.first_seen_at), "
                f"last_seen_at = {high}({table}.last_seen_at, excluded.last_seen_at)"
            )

        return cls(
            user_days=_writer(
                dialect,
                paramstyle,
                "event_user_days",
                _USER_DAY_COLUMNS,
                "ON CONFLICT (project_id, name, day, profile_id) DO UPDATE SET "
                "count = event_user_days.count + excluded.count, "
                + edges("event_user_days")
                + " RETURNING project_id, name, day, profile_id, count",
            ),
            rollup=_writer(
                dialect,
                paramstyle,
                "event_rollups",
                _ROLLUP_COLUMNS,
                "ON CONFLICT (project_id, day, name) DO UPDATE SET "
                "count = event_rollups.count + excluded.count, "
                "users = event_rollups.users + excluded.users, " + edges("event_rollups"),
            ),
            last=_writer(
                dialect,
                paramstyle,
                "event_user_last",
                ("project_id", "name", "profile_id", "last_day"),
                "ON CONFLICT (project_id, name, profile_id) DO UPDATE SET "
                "last_day = excluded.last_day WHERE excluded.last_day > event_user_last.last_day",
            ),
        )


_statements: dict[tuple[str, str], _Statements] = {}


def _for(conn: Connection) -> _Statements:
    key = (conn.dialect.name, conn.dialect.paramstyle)
    found = _statements.get(key)
    if found is None:
        found = _statements[key] = _Statements.build(*key)
    return found


def add_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Count newly inserted events (rows as inserted into ``events``)."""
    if not rows:
        return
    per_user: dict[UserDayKey, list[int]] = {}
    for row in rows:
        created = row["created_at"]
        key = (row["project_id"], row["name"], created - created % DAY, row["profile_id"])
        found = per_user.get(key)
        if found is None:
            per_user[key] = [1, created, created]
        else:
            found[0] += 1
            if created < found[1]:
                found[1] = created
            if created > found[2]:
                found[2] = created
    statements = _for(conn)
    keys = sorted(per_user)
    values = [(*k, *per_user[k]) for k in keys]
    inserted: set[tuple[Any, ...]] = set()
    for sql, params in statements.user_days.statements(values):
        for written in conn.exec_driver_sql(sql, params):
            key = (written[0], written[1], written[2], written[3])
            if written[4] == per_user[key][0]:
                inserted.add(key)
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
    statements.rollup(conn, [(*k, *per_key[k]) for k in sorted(per_key)])
    last_days: dict[tuple[int, str, str], int] = {}
    for project_id, name, day, profile_id in keys:
        spot = (project_id, name, profile_id)
        if day > last_days.get(spot, day - 1):
            last_days[spot] = day
    statements.last(conn, [(*k, last_days[k]) for k in sorted(last_days)])


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
    _merge_last(conn, project_id, absorbed, survivor, sorted({row.name for row in moved}))
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


def _merge_last(
    conn: Connection, project_id: int, absorbed: str, survivor: str, names: list[str]
) -> None:
    """The survivor's last day of each name is the later of the two profiles'."""
    x = event_user_last.c
    rows = conn.execute(
        sa.select(x.name, x.last_day).where(
            x.project_id == project_id, x.name.in_(names), x.profile_id == absorbed
        )
    ).all()
    if not rows:
        return
    statements = _for(conn)
    statements.last(conn, sorted((project_id, name, survivor, day) for name, day in rows))
    conn.execute(
        sa.delete(event_user_last).where(
            x.project_id == project_id, x.name.in_(names), x.profile_id == absorbed
        )
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
    x = event_user_last.c
    conn.execute(
        sa.delete(event_user_last).where(
            x.project_id == project_id,
            x.name.in_(sorted({row.name for row in gone})),
            x.profile_id == profile_id,
        )
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
            "LOCK TABLE event_rollups, event_user_days, event_user_last IN SHARE ROW EXCLUSIVE MODE"
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
    # A user whose last day of a name is this one, and who has no event of it left that
    # day, has none at all any more (everything before the day went with retention).
    x = event_user_last.c
    still = sa.select(u.profile_id).where(
        u.project_id == x.project_id, u.name == x.name, u.day == day, u.profile_id == x.profile_id
    )
    scope_x: list[Any] = [x.last_day <= day, ~sa.exists(still)]
    if project_ids is not None:
        scope_x.append(x.project_id.in_(sorted(set(project_ids))))
    conn.execute(sa.delete(event_user_last).where(*scope_x))


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
    conn.execute(sa.delete(event_user_last).where(event_user_last.c.last_day < day))


def rebuild_all(conn: Connection, project_id: int | None = None) -> None:
    """Compute every rollup again from the events (of one project, or all): what migration
    0016 does once, for repairs and benches. One scan of the events."""
    u = event_user_days.c
    r = event_rollups.c
    e = events.c
    scope_u = [] if project_id is None else [u.project_id == project_id]
    scope_r = [] if project_id is None else [r.project_id == project_id]
    scope_e = [] if project_id is None else [e.project_id == project_id]
    x = event_user_last.c
    conn.execute(sa.delete(event_user_days).where(*scope_u))
    conn.execute(sa.delete(event_rollups).where(*scope_r))
    conn.execute(
        sa.delete(event_user_last).where(
            *([] if project_id is None else [x.project_id == project_id])
        )
    )
    day = day_sql(e.created_at)
    conn.execute(
        sa.insert(event_user_days).from_select(
            ["project_id", "name", "day", "profile_id", "count", "first_seen_at", "last_seen_at"],
            sa.select(
                e.project_id,
                e.name,
                day,
                e.profile_id,
                sa.func.count(),
                sa.func.min(e.created_at),
                sa.func.max(e.created_at),
            )
            .where(*scope_e)
            .group_by(e.project_id, e.name, day, e.profile_id),
        )
    )
    conn.execute(
        sa.insert(event_rollups).from_select(
            ["project_id", "day", "name", "count", "users", "first_seen_at", "last_seen_at"],
            sa.select(
                u.project_id,
                u.day,
                u.name,
                sa.func.sum(u.count),
                sa.func.count(),
                sa.func.min(u.first_seen_at),
                sa.func.max(u.last_seen_at),
            )
            .where(*scope_u)
            .group_by(u.project_id, u.day, u.name),
        )
    )
    conn.execute(
        sa.insert(event_user_last).from_select(
            ["project_id", "name", "profile_id", "last_day"],
            sa.select(u.project_id, u.name, u.profile_id, sa.func.max(u.day))
            .where(*scope_u)
            .group_by(u.project_id, u.name, u.profile_id),
        )
    )
