"""The SQL that keeps the event rollups true (tables in store/tables_reporting.py).

Called inside the pipeline's batch transaction (``reporting.rollups.RollupHook``) and by
retention (store/retention.py). ``event_user_days`` says who had an event (one row per
project, event name, UTC day and profile, inserted once and never updated);
``event_rollups`` (one row per project, event name and day) has the count, first/last
seen and ``users``, the number of ``event_user_days`` rows of its key:

- new events: one ``INSERT … ON CONFLICT DO NOTHING RETURNING`` of the batch's user-days
  returns the ones it created, the key's new users (with several workers on PostgreSQL
  the unique key decides, not a read before the write; a user-day already stored costs
  an index probe, no write), and one upsert adds the counts and new users to the rollups;
- a merge moves the absorbed profile's user-days to the survivor, dropping those the
  survivor has too (one user fewer for that key); counts and first/last seen do not change;
- an erasure removes the profile's user-days and subtracts what its deleted events
  counted (``ProfileStore.erase_profile`` returns that per name and day); a key's
  first/last seen is looked up again in the events left only when the erased user held it;
- retention drops the rows of days before the cutoff's day and recomputes that day;
- ``event_day_sketches`` (HyperLogLog registers per key, store/hll.py) get the batch's new
  users of each key, read and written while the batch holds the key's ``event_rollups``
  row (its upsert locks it on PostgreSQL, so two workers never lose each other's users);
  a merge or an erasure marks the keys it touched stale (``registers`` NULL), and each
  batch rebuilds a few stale keys from their user-days (``repair_sketches``).

Keys are written in sorted order, so that two workers touching the same rows lock them
in the same order and never deadlock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.store import hll
from tidings.store.bulk import BulkInsert
from tidings.store.tables import events
from tidings.store.tables_reporting import event_day_sketches, event_rollups, event_user_days

__all__ = [
    "DAY",
    "ErasedDay",
    "add_events",
    "day_of",
    "day_sql",
    "erase_profile",
    "erased_days",
    "merge_profiles",
    "rebuild_all",
    "rebuild_day",
    "rebuild_sketches",
    "repair_sketches",
    "trim_before",
]

DAY = 86_400_000_000  # microseconds
_CHUNK = 300

RollupKey = tuple[int, int, str]  # project, day, name


def day_of(micros: int) -> int:
    """The UTC midnight (microseconds) that starts the day of ``micros``."""
    return micros - micros % DAY


def day_sql(column: Any) -> Any:
    """``day_of`` in SQL: floor to the UTC day on both databases (``%`` truncates towards
    zero there, so times before 1970 need the second modulo)."""
    return column - ((column % DAY) + DAY) % DAY


_USER_DAY_COLUMNS = ("project_id", "name", "day", "profile_id")
_ROLLUP_COLUMNS = ("project_id", "day", "name", "count", "users", "first_seen_at", "last_seen_at")


class _Upsert:
    """``INSERT … ON CONFLICT … RETURNING …`` of many rows, given as one list per column;
    the rows it returns, as the driver's tuples.

    - PostgreSQL: ``INSERT … SELECT * FROM unnest(<one array per column>) …``, one
      statement and one parameter per column whatever the rows (psycopg spends longer
      parsing a multi-row ``VALUES`` of a few hundred rows than the server takes to run
      it). The arrays go in binary (``%b``): psycopg writes a text array literal value by
      value in Python, about four times slower than the binary form (docs/benchmarks.md).
    - SQLite: multi-row ``VALUES`` (store/bulk.py), up to 1,000 rows a statement.

    The statement runs on the connection's DBAPI connection, in its transaction: the rows
    of SQLAlchemy's results cost about 2 µs each, as much as the database spends
    writing a user-day.
    """

    def __init__(
        self, dialect: str, paramstyle: str, table: str, columns: Sequence[str], suffix: str
    ) -> None:
        self._values: BulkInsert | None = None
        if dialect == "postgresql":
            arrays = ", ".join(f"%b::{_TYPES[c]}[]" for c in columns)
            self._sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
                + suffix
            )
        else:
            self._values = BulkInsert(
                dialect, paramstyle, table, columns, suffix=suffix, chunk=1000
            )

    def __call__(self, conn: Connection, columns: Sequence[list[Any]]) -> list[Any]:
        if not columns[0]:
            return []
        if self._values is None:
            return _fetch(conn, self._sql, columns)
        returned: list[Any] = []
        for sql, params in self._values.statements(list(zip(*columns, strict=True))):
            returned += _fetch(conn, sql, params)
        return returned


def _fetch(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Run ``sql`` on ``conn``'s DBAPI connection; the rows it returns."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    finally:
        cursor.close()


_TYPES = {
    "project_id": "integer",
    "name": "text",
    "day": "bigint",
    "profile_id": "text",
    "count": "bigint",
    "users": "bigint",
    "first_seen_at": "bigint",
    "last_seen_at": "bigint",
}


@dataclass(frozen=True, slots=True)
class _Statements:
    """The multi-row statements of ``add_events`` for one dialect (one driver-level
    statement per batch, not one per row, nor one that SQLAlchemy compiles again for
    every batch)."""

    # User-days: inserted if new. RETURNING gives the rows this statement created only:
    # the new users of their day.
    user_days: _Upsert
    # The same for a batch of one project and one day (live traffic): RETURNING only the
    # name and profile, two columns fewer for each new user-day to carry back.
    user_days_of_one_day: _Upsert
    # Rollups: RETURNING each key's users after the write: equal to the batch's new users
    # when the key is new, which is when the batch's users make its whole sketch.
    rollup: _Upsert

    @classmethod
    def build(cls, dialect: str, paramstyle: str) -> _Statements:
        low, high = ("MIN", "MAX") if dialect == "sqlite" else ("LEAST", "GREATEST")

        def edges(table: str) -> str:
            return (
                f"first_seen_at = {low}({table}.first_seen_at, excluded.first_seen_at), "
                f"last_seen_at = {high}({table}.last_seen_at, excluded.last_seen_at)"
            )

        user_days = "ON CONFLICT (project_id, name, day, profile_id) DO NOTHING"
        return cls(
            user_days=_Upsert(
                dialect,
                paramstyle,
                "event_user_days",
                _USER_DAY_COLUMNS,
                user_days + " RETURNING project_id, name, day, profile_id",
            ),
            user_days_of_one_day=_Upsert(
                dialect,
                paramstyle,
                "event_user_days",
                _USER_DAY_COLUMNS,
                user_days + " RETURNING name, profile_id",
            ),
            rollup=_Upsert(
                dialect,
                paramstyle,
                "event_rollups",
                _ROLLUP_COLUMNS,
                "ON CONFLICT (project_id, day, name) DO UPDATE SET "
                "count = event_rollups.count + excluded.count, "
                "users = event_rollups.users + excluded.users, "
                + edges("event_rollups")
                + " RETURNING project_id, day, name, users",
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
    # Per rollup key (project, name, day): its profiles, and [count, first, last].
    profiles_of: dict[tuple[int, str, int], set[str]] = {}
    totals: dict[tuple[int, str, int], list[int]] = {}
    for row in rows:
        created = row["created_at"]
        where = (row["project_id"], row["name"], created - created % DAY)
        total = totals.get(where)
        if total is None:
            totals[where] = [1, created, created]
            profiles_of[where] = {row["profile_id"]}
            continue
        total[0] += 1
        if created < total[1]:
            total[1] = created
        elif created > total[2]:
            total[2] = created
        profiles_of[where].add(row["profile_id"])
    # The user-days in key order (project, name, day, profile), as columns.
    columns: list[list[Any]] = [[], [], [], []]
    for where in sorted(profiles_of):
        profiles = sorted(profiles_of[where])
        for column, value in zip(columns, where, strict=False):
            column += itertools.repeat(value, len(profiles))
        columns[3] += profiles
    statements = _for(conn)
    # The user-days this batch created, per rollup key: the key's new users.
    newcomers: dict[RollupKey, list[str]] = {}
    places = {(project_id, day) for project_id, _, day in profiles_of}
    if len(places) == 1:  # live traffic: the statement returns name and profile
        ((one_project, one_day),) = places
        for name, profile_id in statements.user_days_of_one_day(conn, columns):
            newcomers.setdefault((one_project, one_day, name), []).append(profile_id)
    else:
        for project_id, name, day, profile_id in statements.user_days(conn, columns):
            newcomers.setdefault((project_id, day, name), []).append(profile_id)
    keys = sorted((p, d, n) for p, n, d in totals)  # the rollups' key order
    rollup: list[list[Any]] = [[], [], [], [], [], [], []]
    for project_id, day, name in keys:
        count, first, last = totals[(project_id, name, day)]
        new = newcomers.get((project_id, day, name))
        for column, value in zip(
            rollup,
            (project_id, day, name, count, 0 if new is None else len(new), first, last),
            strict=True,
        ):
            column.append(value)
    fresh: set[RollupKey] = set()
    for project_id, day, name, users in statements.rollup(conn, rollup):
        new = newcomers.get((project_id, day, name))
        if new is not None and users == len(new):
            fresh.add((project_id, day, name))
    _add_to_sketches(conn, newcomers, fresh)


def _add_to_sketches(
    conn: Connection, newcomers: dict[RollupKey, list[str]], fresh: set[RollupKey]
) -> None:
    """Add each key's new users to its sketch. A key whose every user is new in this batch
    (``fresh``) gets a sketch of them; any other key without a sketch gets a stale one.
    Driver-level statements, like the upserts: a handful of rows, once per batch."""
    if not newcomers:
        return
    keys = sorted(newcomers)
    postgresql = conn.dialect.name == "postgresql"
    stored: dict[RollupKey, bytes | None] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        if postgresql:
            sql = _SKETCHES_OF_PG
            params: Sequence[Any] = [
                [k[0] for k in chunk],
                [k[2] for k in chunk],
                [k[1] for k in chunk],
            ]
        else:
            sql = _SKETCHES_OF_SQLITE + ", ".join(["(?, ?, ?)"] * len(chunk)) + ")"
            params = [v for project_id, day, name in chunk for v in (project_id, name, day)]
        for project_id, name, day, registers in _fetch(conn, sql, params):
            stored[(project_id, day, name)] = registers
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for key in keys:
        project_id, day, name = key
        if key not in stored:
            registers = hll.registers_of(newcomers[key]) if key in fresh else None
            inserts.append((project_id, name, day, registers))
        elif (old := stored[key]) is not None:
            registers = hll.add(old, newcomers[key])
            if registers is not old:
                updates.append((registers, project_id, name, day))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if postgresql:
            # One statement each, over binary arrays: a back-fill batch touches a
            # thousand keys, and a statement per row cost ~3 ms a key on PostgreSQL.
            # The batch holds every key's rollup row, so the order of these writes
            # cannot deadlock.
            if inserts:
                cursor.execute(_INSERT_SKETCHES_PG, [list(c) for c in zip(*inserts, strict=True)])
            if updates:
                cursor.execute(_UPDATE_SKETCHES_PG, [list(c) for c in zip(*updates, strict=True)])
        else:
            if inserts:
                cursor.executemany(
                    "INSERT INTO event_day_sketches (project_id, name, day, registers) "
                    "VALUES (?, ?, ?, ?)",
                    inserts,
                )
            if updates:
                cursor.executemany(
                    "UPDATE event_day_sketches SET registers = ? "
                    "WHERE project_id = ? AND name = ? AND day = ?",
                    updates,
                )
    finally:
        cursor.close()


_INSERT_SKETCHES_PG = (
    "INSERT INTO event_day_sketches (project_id, name, day, registers) "
    "SELECT * FROM unnest(%b::integer[], %b::text[], %b::bigint[], %b::bytea[])"
)
_UPDATE_SKETCHES_PG = (
    "UPDATE event_day_sketches AS s SET registers = k.registers "
    "FROM unnest(%b::bytea[], %b::integer[], %b::text[], %b::bigint[]) "
    "AS k(registers, project_id, name, day) "
    "WHERE s.project_id = k.project_id AND s.name = k.name AND s.day = k.day"
)
_SKETCHES_OF_PG = (
    "SELECT s.project_id, s.name, s.day, s.registers FROM event_day_sketches AS s "
    "JOIN unnest(%b::integer[], %b::text[], %b::bigint[]) AS k(project_id, name, day) "
    "ON s.project_id = k.project_id AND s.name = k.name AND s.day = k.day"
)
_STALE_SKETCHES = (
    "SELECT project_id, name, day FROM event_day_sketches WHERE registers IS NULL "
    "ORDER BY project_id, name, day LIMIT "
)
_SKETCHES_OF_SQLITE = (
    "SELECT project_id, name, day, registers FROM event_day_sketches "
    "WHERE (project_id, name, day) IN (VALUES "
)


def _mark_stale(conn: Connection, project_id: int, name: str, day: int) -> None:
    """The key's sketch no longer matches its user-days. On PostgreSQL the key's rollup
    row is locked first, as every other writer of the sketch does (``add_events``,
    ``repair_sketches``), so that none of them writes a sketch over this mark from
    user-days it read before this transaction's changes."""
    if conn.dialect.name == "postgresql":
        r = event_rollups.c
        conn.execute(
            sa.select(r.day)
            .where(r.project_id == project_id, r.day == day, r.name == name)
            .with_for_update()
        )
    s = event_day_sketches.c
    conn.execute(
        sa.update(event_day_sketches)
        .where(s.project_id == project_id, s.name == name, s.day == day)
        .values(registers=None)
    )


def _sketch_from_user_days(conn: Connection, project_id: int, name: str, day: int) -> bytes:
    u = event_user_days.c
    return hll.registers_of(
        conn.execute(
            sa.select(u.profile_id).where(u.project_id == project_id, u.name == name, u.day == day)
        ).scalars()
    )


def sketches_of(
    conn: Connection, project_id: int, names: Sequence[str], start: int, end: int
) -> dict[str, list[bytes]]:
    """Each name's day sketches in ``[start, end)`` (all names if none); a stale one is
    computed from its user-days."""
    s = event_day_sketches.c
    where = [s.project_id == project_id, s.day >= start, s.day < end]
    if names:
        where.append(s.name.in_(list(names)))
    found: dict[str, list[bytes]] = {}
    for name, day, registers in conn.execute(sa.select(s.name, s.day, s.registers).where(*where)):
        if registers is None:
            registers = _sketch_from_user_days(conn, project_id, name, day)
        found.setdefault(name, []).append(registers)
    return found


def repair_sketches(conn: Connection, limit: int) -> int:
    """Rebuild up to ``limit`` stale sketches from their user-days; how many. On
    PostgreSQL a key whose rollup row another transaction holds is left for later
    (``SKIP LOCKED``): that transaction may be adding user-days this one cannot see."""
    s = event_day_sketches.c
    r = event_rollups.c
    # Driver-level: it runs once per batch, and finds nothing nearly always.
    stale = _fetch(conn, _STALE_SKETCHES + str(int(limit)), ())
    done = 0
    for project_id, name, day in stale:
        if conn.dialect.name == "postgresql":
            held = conn.execute(
                sa.select(r.day)
                .where(r.project_id == project_id, r.day == day, r.name == name)
                .with_for_update(skip_locked=True)
            ).first()
            if held is None:
                continue
        conn.execute(
            sa.update(event_day_sketches)
            .where(s.project_id == project_id, s.name == name, s.day == day)
            .values(registers=_sketch_from_user_days(conn, project_id, name, day))
        )
        done += 1
    return done


def _keys_of(conn: Connection, project_id: int, profile_id: str) -> list[tuple[str, int]]:
    """The (name, day) of the profile's user-days."""
    u = event_user_days.c
    return [
        (name, day)
        for name, day in conn.execute(
            sa.select(u.name, u.day)
            .where(u.project_id == project_id, u.profile_id == profile_id)
            .order_by(u.name, u.day)
        )
    ]


def merge_profiles(conn: Connection, project_id: int, absorbed: str, survivor: str) -> None:
    """``absorbed`` became part of ``survivor``: its user-days are the survivor's now. The
    events are the survivor's too, so counts and first/last seen stay as they are."""
    u = event_user_days.c
    r = event_rollups.c
    moved = _keys_of(conn, project_id, absorbed)
    if not moved:
        return
    theirs = set(_keys_of(conn, project_id, survivor))
    for name, day in sorted(moved, key=lambda k: (k[1], k[0])):  # rollup key order
        _mark_stale(conn, project_id, name, day)  # the key's set of ids changed
        mine = sa.and_(u.project_id == project_id, u.name == name, u.day == day)
        if (name, day) in theirs:
            conn.execute(sa.delete(event_user_days).where(mine, u.profile_id == absorbed))
            conn.execute(
                sa.update(event_rollups)
                .where(r.project_id == project_id, r.day == day, r.name == name)
                .values(users=r.users - 1)
            )
        else:
            conn.execute(
                sa.update(event_user_days)
                .where(mine, u.profile_id == absorbed)
                .values(profile_id=survivor)
            )


# What an erasure deleted of one (name, day): (name, day, count, first, last created_at).
ErasedDay = tuple[str, int, int, int, int]


def erased_days(conn: Connection, project_id: int, profile_id: str) -> list[ErasedDay]:
    """The profile's events per name and UTC day (count, first and last ``created_at``),
    read before an erasure deletes them: what the rollups must lose with them."""
    e = events.c
    day = day_sql(e.created_at)
    return [
        (name, int(d), int(count), int(first), int(last))
        for name, d, count, first, last in conn.execute(
            sa.select(
                e.name, day, sa.func.count(), sa.func.min(e.created_at), sa.func.max(e.created_at)
            )
            .where(e.project_id == project_id, e.profile_id == profile_id)
            .group_by(e.name, day)
        )
    ]


def erase_profile(
    conn: Connection, project_id: int, profile_id: str, gone: Sequence[ErasedDay]
) -> None:
    """The profile and its events are gone (``gone``: what they counted, per name and
    day, from ``erased_days``): so are its user-days, its users and counts in the rollups."""
    u = event_user_days.c
    r = event_rollups.c
    conn.execute(
        sa.delete(event_user_days).where(u.project_id == project_id, u.profile_id == profile_id)
    )
    for name, day, count, first, last in sorted(gone, key=lambda g: (g[1], g[0])):
        key = sa.and_(r.project_id == project_id, r.day == day, r.name == name)
        left = conn.execute(
            sa.update(event_rollups)
            .where(key)
            .values(count=r.count - count, users=r.users - 1)
            .returning(r.count, r.first_seen_at, r.last_seen_at)
        ).first()
        if left is None:
            continue
        remaining, first_seen, last_seen = left
        if remaining <= 0:
            _drop_key(conn, project_id, day, name)
            continue
        if first <= first_seen or last >= last_seen:
            _refresh_edges(conn, project_id, day, name)
        _mark_stale(conn, project_id, name, day)


def _drop_key(conn: Connection, project_id: int, day: int, name: str) -> None:
    """No event of the key is left: its rollup and sketch go."""
    r = event_rollups.c
    s = event_day_sketches.c
    conn.execute(
        sa.delete(event_rollups).where(r.project_id == project_id, r.day == day, r.name == name)
    )
    conn.execute(
        sa.delete(event_day_sketches).where(
            s.project_id == project_id, s.name == name, s.day == day
        )
    )


def _refresh_edges(conn: Connection, project_id: int, day: int, name: str) -> None:
    """First/last seen of one rollup looked up again in the events left (after an erasure
    removed the events at an edge): the first and the last of the day's events of the
    project with that name, along the project's time index."""
    e = events.c
    r = event_rollups.c
    of_key = (
        e.project_id == project_id,
        e.created_at >= day,
        e.created_at < day + DAY,
        e.name == name,
    )
    first = conn.execute(
        sa.select(e.created_at).where(*of_key).order_by(e.created_at).limit(1)
    ).scalar()
    last = conn.execute(
        sa.select(e.created_at).where(*of_key).order_by(e.created_at.desc()).limit(1)
    ).scalar()
    if first is None or last is None:
        _drop_key(conn, project_id, day, name)
        return
    conn.execute(
        sa.update(event_rollups)
        .where(r.project_id == project_id, r.day == day, r.name == name)
        .values(first_seen_at=first, last_seen_at=last)
    )


def rebuild_day(conn: Connection, day: int, project_ids: Iterable[int] | None = None) -> None:
    """Compute one UTC day's rollups again from the events (after retention deleted part
    of it). On PostgreSQL the rollup tables are locked against the pipeline's writes for
    the transaction, so that a batch either committed before (its events are counted
    here) or writes after (its increments land on the rebuilt rows)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "LOCK TABLE event_rollups, event_user_days, event_day_sketches "
            "IN SHARE ROW EXCLUSIVE MODE"
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
    _insert_from_events(conn, scope_e, sa.literal(day, sa.BigInteger))
    _write_sketches(conn, scope_u, None if project_ids is None else sorted(set(project_ids)), day)


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
    conn.execute(sa.delete(event_day_sketches).where(event_day_sketches.c.day < day))


def rebuild_all(conn: Connection, project_id: int | None = None) -> None:
    """Compute every rollup again from the events (of one project, or all): what migration
    0016 does once, for repairs and benches. Two scans of the events."""
    u = event_user_days.c
    r = event_rollups.c
    e = events.c
    scope_u = [] if project_id is None else [u.project_id == project_id]
    scope_r = [] if project_id is None else [r.project_id == project_id]
    scope_e = [] if project_id is None else [e.project_id == project_id]
    conn.execute(sa.delete(event_user_days).where(*scope_u))
    conn.execute(sa.delete(event_rollups).where(*scope_r))
    _insert_from_events(conn, scope_e, day_sql(e.created_at))
    rebuild_sketches(conn, project_id)


def _insert_from_events(conn: Connection, scope: list[Any], day: Any) -> None:
    """The user-days and rollups of the events ``scope`` selects (``day``: their day, an
    expression or a literal). Two reads of those events: one for who (the user-days),
    one for the counts and first/last seen (the rollups, with their distinct users)."""
    e = events.c
    conn.execute(
        sa.insert(event_user_days).from_select(
            ["project_id", "name", "day", "profile_id"],
            sa.select(e.project_id, e.name, day, e.profile_id)
            .where(*scope)
            .group_by(e.project_id, e.name, day, e.profile_id),
        )
    )
    conn.execute(
        sa.insert(event_rollups).from_select(
            ["project_id", "day", "name", "count", "users", "first_seen_at", "last_seen_at"],
            sa.select(
                e.project_id,
                day,
                e.name,
                sa.func.count(),
                sa.func.count(sa.distinct(e.profile_id)),
                sa.func.min(e.created_at),
                sa.func.max(e.created_at),
            )
            .where(*scope)
            .group_by(e.project_id, day, e.name),
        )
    )


def _write_sketches(
    conn: Connection, scope: list[Any], project_ids: list[int] | None, day: int
) -> None:
    """Delete and rebuild the sketches of ``day`` (of ``project_ids``, or all if None)
    from the user-days that ``scope`` selects (the same day and projects)."""
    s = event_day_sketches.c
    where = [s.day == day]
    if project_ids is not None:
        where.append(s.project_id.in_(project_ids))
    conn.execute(sa.delete(event_day_sketches).where(*where))
    u = event_user_days.c
    _insert_sketches(
        conn,
        conn.execute(
            sa.select(u.project_id, u.name, u.day, u.profile_id)
            .where(*scope)
            .order_by(u.project_id, u.name, u.day)
        ),
    )


def _insert_sketches(conn: Connection, rows: Iterable[Any]) -> None:
    """Sketches from ``(project, name, day, profile)`` rows in key order."""
    batch: list[dict[str, Any]] = []
    for key, group in itertools.groupby(rows, key=lambda r: (r[0], r[1], r[2])):
        registers = hll.registers_of(r[3] for r in group)
        batch.append({"project_id": key[0], "name": key[1], "day": key[2], "registers": registers})
        if len(batch) >= 500:
            conn.execute(sa.insert(event_day_sketches), batch)
            batch = []
    if batch:
        conn.execute(sa.insert(event_day_sketches), batch)


def rebuild_sketches(conn: Connection, project_id: int | None = None) -> None:
    """Every sketch again from ``event_user_days`` (of one project, or all): one read of
    the user-days in key order, streamed (migration 0020 uses it too)."""
    s = event_day_sketches.c
    u = event_user_days.c
    conn.execute(
        sa.delete(event_day_sketches).where(
            *([] if project_id is None else [s.project_id == project_id])
        )
    )
    scope = [] if project_id is None else [u.project_id == project_id]
    reader = conn.execute(
        sa.select(u.project_id, u.name, u.day, u.profile_id)
        .where(*scope)
        .order_by(u.project_id, u.name, u.day)
        .execution_options(yield_per=5000)
    )
    _insert_sketches(conn, reader)
