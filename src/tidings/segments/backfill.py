"""Back-fill: compute a new or edited dynamic list over all history, in the background.

A dynamic list is created, or its rule changed, with state ``loading`` and a new
``version``. The worker (``SegmentWorker.tick``, between batches) then walks the project's
profiles in id order, ``chunk`` at a time, each chunk in one transaction:

1. the profiles of the chunk that match, with ``compile_rule`` (one SQL query, narrowed to
   the chunk's id range), against the list's members in that range: members found at the
   new version are inserted (``entered``) or kept (their version raised), members no
   longer found are removed (``left``). Facts are written only for real differences, so
   an edit that changes little writes little;
2. timers (``segment_timers``) for the profiles of the chunk whose result the clock alone
   will flip (``next_change``): only those that can flip are evaluated in Python (members
   of an "at least N in the last 30 days" list, profiles with events dated in the future,
   … see ``drift``);
3. the cursor (the chunk's last id) and the done count.

After the last chunk ``users_count`` is recounted and the state set to ``ready``.

While it runs, the real-time path (``realtime``) keeps the profiles at or below the cursor
up to date, and leaves the others to the back-fill, which reads them when it gets there.

PostgreSQL: a chunk share-locks its profiles in id order, then locks the list row
``FOR UPDATE`` (the order every membership writer follows), so that it and the pipeline
each see the other's work whole; a transaction-level advisory lock per list keeps two
workers from computing the same list at once (the second one moves on to another list).
SQLite: a chunk is read on the reader, outside the write lock (the worker's thread is the
only writer of profiles and events, so nothing it read can change before it writes), and
written in one short transaction that first checks that the list is still at the version
and cursor it read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.segments.compile import compile_rule
from tidings.segments.realtime import (
    LiveList,
    RealtimeSegments,
    SegmentTimers,
    among,
    insert_timers,
    load_events,
    load_facts,
)
from tidings.store.database import Writer
from tidings.store.lists import ListStore
from tidings.store.tables import events, list_members, lists, profiles, segment_timers

__all__ = ["Backfill", "SegmentWorker"]

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock(space, list_id): one back-fill per list at a time.
BACKFILL_SPACE = 0x5444_0003


@dataclass
class _Plan:
    """One chunk, computed: what to write."""

    list_id: int
    version: int
    cursor: str  # where the chunk starts (exclusive)
    last: str  # the id it ends at (inclusive), or the cursor if it found no profile
    final: bool  # no profile after it: the list is ready once written
    visited: int
    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    kept: bool = False  # some members still match: their version is raised
    timers: dict[str, int] = field(default_factory=dict)


class Backfill:
    """Computes loading dynamic lists, one chunk per ``step``."""

    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        realtime: RealtimeSegments,
        *,
        chunk: int = 5000,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.realtime = realtime
        self.chunk = chunk
        self.dialect = writer.dialect.name
        self.postgres = self.dialect == "postgresql"
        self.chunks = 0  # chunks written, for tests and benchmarks
        self._failures: dict[int, tuple[int, float]] = {}  # list → (failures, retry at)

    def loading(self) -> list[int]:
        with self.reader.connect() as conn:
            return list(
                conn.execute(
                    sa.select(lists.c.id)
                    .where(
                        lists.c.type == "dynamic",
                        lists.c.state == "loading",
                        lists.c.deleted_at.is_(None),
                    )
                    .order_by(lists.c.id)
                ).scalars()
            )

    def step(self, now: int) -> bool:
        """Advance one loading list by one chunk; False when there was nothing to do. A
        list whose chunk fails is retried after a pause that doubles (up to a minute),
        without holding up the others."""
        for list_id in self.loading():
            failed = self._failures.get(list_id)
            if failed is not None and time.monotonic() < failed[1]:
                continue
            try:
                done = self._step(list_id, now)
            except Exception:
                count = failed[0] + 1 if failed is not None else 1
                pause = min(60.0, 0.5 * 2**count)
                self._failures[list_id] = (count, time.monotonic() + pause)
                logger.exception("back-fill of list %s failed; retrying in %.1f s", list_id, pause)
                continue
            self._failures.pop(list_id, None)
            if done:
                return True
        return False

    def run(self, now: int, *, limit: int = 1_000_000) -> int:
        """Step until nothing is loading (tests, benchmarks); the number of steps."""
        steps = 0
        while steps < limit and self.step(now):
            steps += 1
        return steps

    # -- one chunk ---------------------------------------------------------------------------

    def _step(self, list_id: int, now: int) -> bool:
        if self.postgres:
            with self.writer.begin() as conn:
                # The chunk's query is estimated costly enough for JIT compilation, which
                # took ~10 ms of a ~60 ms chunk and saves nothing on 5,000 index probes.
                claimed = conn.execute(
                    sa.select(
                        sa.func.set_config("jit", "off", True),
                        sa.func.pg_try_advisory_xact_lock(BACKFILL_SPACE, list_id),
                    )
                ).one()[1]
                if not claimed:
                    return False  # another worker is on it
                row = self._row(conn, list_id)
                if row is None:
                    return False
                if row.backfill_version != row.version:
                    return self._start(conn, list_id)
                ids = self._next(conn, row, lock=True)
                locked = self._row(conn, list_id, lock=True)
                if self._changed(locked, row):
                    return True
                plan = self._compute(conn, row, ids, now)
                self._write(conn, locked, plan, now)
            return True
        with self.reader.connect() as read:
            row = self._row(read, list_id)
            if row is None:
                return False
            if row.backfill_version != row.version:
                with self.writer.begin() as conn:
                    return self._start(conn, list_id)
            ids = self._next(read, row, lock=False)
            plan = self._compute(read, row, ids, now)
        with self.writer.begin() as conn:
            locked = self._row(conn, list_id, lock=True)
            if self._changed(locked, row):
                return True  # edited or deleted meanwhile: start again from what is stored
            self._write(conn, locked, plan, now)
        return True

    @staticmethod
    def _row(conn: Connection, list_id: int, *, lock: bool = False) -> Any:
        query = sa.select(lists).where(
            lists.c.id == list_id,
            lists.c.type == "dynamic",
            lists.c.state == "loading",
            lists.c.deleted_at.is_(None),
        )
        if lock:
            query = query.with_for_update()
        return conn.execute(query).first()

    @staticmethod
    def _changed(now_row: Any, then_row: Any) -> bool:
        if now_row is None:
            return True
        return bool(
            now_row.version != then_row.version
            or now_row.backfill_version != then_row.backfill_version
            or now_row.backfill_cursor != then_row.backfill_cursor
        )

    def _start(self, conn: Connection, list_id: int) -> bool:
        """Begin the back-fill of the list's current version: count the project's
        profiles (for progress) and set the cursor before the first id."""
        row = self._row(conn, list_id, lock=True)
        if row is None or row.backfill_version == row.version:
            return True
        total = conn.execute(
            sa.select(sa.func.count())
            .select_from(profiles)
            .where(profiles.c.project_id == row.project_id)
        ).scalar_one()
        conn.execute(
            sa.update(lists)
            .where(lists.c.id == list_id)
            .values(
                backfill_version=row.version,
                backfill_cursor="",
                backfill_done=0,
                backfill_total=int(total),
            )
        )
        return True

    def _next(self, conn: Connection, row: Any, *, lock: bool) -> tuple[int, str | None]:
        """How many of the next ``chunk`` profiles after the cursor there are, and the last
        one's id; share-locked (in id order) on PostgreSQL."""
        query = (
            sa.select(profiles.c.id)
            .where(profiles.c.project_id == row.project_id, profiles.c.id > row.backfill_cursor)
            .order_by(profiles.c.id)
            .limit(self.chunk)
        )
        if lock:
            query = query.with_for_update(read=True)
        chunk = query.subquery()
        count, last = conn.execute(sa.select(sa.func.count(), sa.func.max(chunk.c.id))).one()
        return int(count), last

    def _compute(self, conn: Connection, row: Any, ids: tuple[int, str | None], now: int) -> _Plan:
        live = self.realtime.live(conn, row.id, row.version)
        if live is None:  # retried after a pause (see ``step``)
            raise RuntimeError(f"list {row.id}: its rule cannot be read")
        start: str = row.backfill_cursor
        count, last = ids
        final = count < self.chunk
        plan = _Plan(
            list_id=row.id,
            version=row.version,
            cursor=start,
            last=last or start,
            final=final,
            visited=count,
        )
        end = None if final else plan.last
        in_range = [profiles.c.id > start]
        member_range = [list_members.c.list_id == row.id, list_members.c.profile_id > start]
        if end is not None:
            in_range.append(profiles.c.id <= end)
            member_range.append(list_members.c.profile_id <= end)
        query = compile_rule(live.rule, project_id=row.project_id, now=now, dialect=self.dialect)
        matching = set(conn.execute(query.where(*in_range)).scalars())
        held = sa.select(list_members.c.profile_id).where(*member_range)
        members = set(conn.execute(held).scalars())
        plan.entered = sorted(matching - members)
        plan.left = sorted(members - matching)
        plan.kept = not members.isdisjoint(matching)
        plan.timers = self._timers(conn, live, start, end, matching, now)
        return plan

    def _timers(
        self,
        conn: Connection,
        live: LiveList,
        start: str,
        end: str | None,
        matching: set[str],
        now: int,
    ) -> dict[str, int]:
        """``next_change`` of the chunk's profiles that the clock alone can flip."""
        if not live.names and not live.user_clock:
            return {}
        project_id = live.project_id
        timers: dict[str, int] = {}
        candidates: set[str] = set()
        if live.user_clock:
            query = sa.select(profiles.c.id).where(
                profiles.c.project_id == project_id, profiles.c.id > start
            )
            if end is not None:
                query = query.where(profiles.c.id <= end)
            candidates.update(conn.execute(query).scalars())
        else:
            conditions = []
            either_way = live.drift in ("up", "any")
            for name, bound in sorted(live.clock_bounds.items()):
                if not either_way:  # only events dated in the future can flip it
                    conditions.append(sa.and_(events.c.name == name, events.c.created_at > now))
                elif bound is None:  # an event of any age can (a relative date in its data)
                    conditions.append(events.c.name == name)
                else:  # events within the window (or ahead) can
                    conditions.append(
                        sa.and_(events.c.name == name, events.c.created_at > now - bound)
                    )
            if conditions:
                query = (
                    sa.select(events.c.profile_id)
                    .distinct()
                    .where(
                        events.c.project_id == project_id,
                        events.c.profile_id > start,
                        sa.or_(*conditions),
                    )
                )
                if end is not None:
                    query = query.where(events.c.profile_id <= end)
                candidates.update(conn.execute(query).scalars())
            if live.drift == "down" and live.at_least is not None:
                # Members with nothing dated ahead: their timers in SQL, in closed form.
                timers.update(self._nth_recent(conn, live, start, end, matching - candidates, now))
            elif live.drift == "down":
                candidates.update(matching)
        if not candidates:
            return timers
        facts = load_facts(conn, candidates, data=live.profile_data)
        history = load_events(
            conn, project_id, candidates, live.names, live.since(now), data=live.event_data
        )
        for profile_id, profile in facts.items():
            own = history.get(profile_id, [])
            due = live.next_change(profile, own, now, profile_id in matching)
            if due is not None:
                timers[profile_id] = due
        return timers

    @staticmethod
    def _nth_recent(
        conn: Connection,
        live: LiveList,
        start: str,
        end: str | None,
        members: set[str],
        now: int,
    ) -> dict[str, int]:
        """For "at least n in the window": a member leaves when its n-th most recent
        counted event leaves the window (what ``next_change`` finds, when no event is
        dated ahead), read for the whole chunk with one window-function query."""
        if not members:
            return {}
        assert live.at_least is not None
        name, window, n = live.at_least
        rank = (
            sa.func.row_number()
            .over(partition_by=events.c.profile_id, order_by=events.c.created_at.desc())
            .label("rank")
        )
        recent = sa.select(events.c.profile_id, events.c.created_at, rank).where(
            events.c.project_id == live.project_id,
            among(conn, events.c.profile_id, sorted(members)),
            events.c.name == name,
            events.c.created_at > now - window,
            events.c.created_at <= now,
        )
        ranked = recent.subquery()
        rows = conn.execute(
            sa.select(ranked.c.profile_id, ranked.c.created_at).where(ranked.c.rank == n)
        )
        return {pid: at + window for pid, at in rows}

    def _write(self, conn: Connection, row: Any, plan: _Plan, now: int) -> None:
        """Write a computed chunk; ``row`` is the list's, locked."""
        for ids, add in ((plan.left, False), (plan.entered, True)):
            ListStore.apply_changes(
                conn,
                project_id=row.project_id,
                list_id=plan.list_id,
                version=plan.version,
                profile_ids=ids,
                now=now,
                add=add,
                count=False,  # with the cursor, below
            )
        member_range = [
            list_members.c.list_id == plan.list_id,
            list_members.c.profile_id > plan.cursor,
        ]
        timer_range = [
            segment_timers.c.list_id == plan.list_id,
            segment_timers.c.profile_id > plan.cursor,
        ]
        if not plan.final:
            member_range.append(list_members.c.profile_id <= plan.last)
            timer_range.append(segment_timers.c.profile_id <= plan.last)
        if plan.kept:
            conn.execute(
                sa.update(list_members)
                .where(*member_range, list_members.c.version != plan.version)
                .values(version=plan.version)
            )
        conn.execute(sa.delete(segment_timers).where(*timer_range))
        insert_timers(conn, [(plan.list_id, pid, due) for pid, due in sorted(plan.timers.items())])
        values: dict[str, Any] = {
            "backfill_cursor": plan.last,
            "backfill_done": (row.backfill_done or 0) + plan.visited,
            "users_count": lists.c.users_count + len(plan.entered) - len(plan.left),
        }
        if plan.final:
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(list_members)
                .where(list_members.c.list_id == plan.list_id)
            ).scalar_one()
            values.update(state="ready", users_count=int(count))
        conn.execute(sa.update(lists).where(lists.c.id == plan.list_id).values(values))
        self.chunks += 1


class SegmentWorker:
    """What the worker does for segments between batches: fire due timers, then advance
    one back-fill by one chunk. ``tick(now)`` returns how much it did (0: idle)."""

    def __init__(self, writer: Writer, reader: Engine, realtime: RealtimeSegments) -> None:
        self.timers = SegmentTimers(writer, reader, realtime)
        self.backfill = Backfill(writer, reader, realtime)

    def tick(self, now: int) -> int:
        done = self.timers.run_due(now)
        if self.backfill.step(now):
            done += 1
        return done
