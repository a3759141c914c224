"""Entrances and waits driven by lists and schedules, run by the worker's tick.

List changes: the segments engine (and the lists API) record ``list_changes`` rows in
their own transactions. Their ids are not in commit order on PostgreSQL (a transaction
that took an id may commit after a later one), so a cursor over ids could skip a row.
Instead the tick reads the changes of the lists that live journeys listen to, created
since the last tick that caught up (the ``lists`` mark) less ``LAG`` (a transaction takes
less than that to commit), minus those it handled (``journey_list_seen``, written in the
same transaction as the entrance or the wait it caused): a late commit is simply found on
a later tick, and a worker down for days misses nothing. Seen rows older than the window
are pruned.

The rule of a list entrance: it enters the users whose joining the list was recorded
while the journey is live, i.e. at or after it last went live (``journeys.live_at``,
set when it is published and when it is turned back on). Members already on the list
when it goes live are not entered (a schedule entrance over the list, or the API's
trigger, reaches them), nor are those who joined while it was off.

Schedules: each occurrence of a schedule entrance's RRULE since the journey was published
(in the project's timezone) is claimed once (``journey_schedule_runs``, a primary key)
and enters the list's members then, each entrance's occurrence naming the run.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.journeys.schedule import occurrences_between
from tidings.journeys.engine import JourneyEngine
from tidings.journeys.sql import insert_ignore, upsert_many
from tidings.journeys.state import ACTIVE, Tx
from tidings.store.tables import list_changes, list_members
from tidings.store.tables_journeys import (
    journey_list_seen,
    journey_marks,
    journey_schedule_runs,
    journey_timers,
    journey_waits,
)

__all__ = ["LAG", "list_tick", "schedule_tick"]

LAG = 600 * 1_000_000  # longer than any transaction that records a list change
_BATCH = 500


def list_tick(engine: JourneyEngine, now: int) -> int:
    """Handle list changes not seen yet; answers how many."""
    with engine.writer.begin() as conn:
        live = engine.graphs.live(conn)
        entering: dict[int, list[Any]] = {}
        for graph in live:
            for step in graph.entrances():
                if step.data.get("trigger") == "list" and step.data.get("list_id"):
                    entering.setdefault(int(step.data["list_id"]), []).append((graph, step))
        waited = {
            int(list_id)
            for (list_id,) in conn.execute(
                sa.select(journey_waits.c.list_id)
                .where(journey_waits.c.list_id.is_not(None))
                .distinct()
            )
        }
        lists = set(entering) | waited
        if not lists:
            return 0
        mark = conn.execute(
            sa.select(journey_marks.c.at).where(journey_marks.c.name == "lists")
        ).scalar()
        if mark is None:  # the first tick: from when the earliest listener went live
            mark = min((g.journey.live_at or now for g in live), default=now)
        since = min(mark, now) - LAG
        seen = sa.select(journey_list_seen.c.change_id)
        rows = conn.execute(
            sa.select(list_changes)
            .where(
                list_changes.c.list_id.in_(sorted(lists)),
                list_changes.c.created_at >= since,
                list_changes.c.id.not_in(seen),
            )
            .order_by(list_changes.c.id)
            .limit(_BATCH)
        ).all()
        if len(rows) < _BATCH:  # caught up: the next tick looks from here (less LAG)
            upsert_many(conn, journey_marks, ("name",), [{"name": "lists", "at": now}])
        if not rows:
            conn.execute(sa.delete(journey_list_seen).where(journey_list_seen.c.created_at < since))
            return 0
        tx = Tx(now)
        people = engine.load_profiles(conn, {r.profile_id for r in rows})
        for change in rows:
            if not insert_ignore(
                conn, journey_list_seen, {"change_id": change.id, "created_at": change.created_at}
            ):
                continue
            profile = people.get(change.profile_id)
            if profile is None:
                continue
            _resolve_list_waits(engine, conn, change, profile, tx)
            if change.change != "entered":
                continue
            for graph, step in entering.get(change.list_id, []):
                if graph.journey.project_id != change.project_id:
                    continue
                if graph.journey.live_at is None or change.created_at < graph.journey.live_at:
                    continue  # it joined before the journey went live, or while it was off
                body = {
                    "name": "list_entered",
                    "data": {"list_id": change.list_id},
                    "created_at": change.created_at,
                }
                engine.enter(conn, graph, step, profile, tx, event=body, unique=f"list:{change.id}")
        tx.flush(conn)
        return len(rows)


def _resolve_list_waits(
    engine: JourneyEngine, conn: Connection, change: Any, profile: Any, tx: Tx
) -> None:
    tx.write_pending(conn)
    waits = conn.execute(
        sa.select(journey_waits).where(
            journey_waits.c.profile_id == change.profile_id,
            journey_waits.c.list_id == change.list_id,
        )
    ).all()
    if not waits:
        return
    states = engine.states(conn, [w.entrance_id for w in waits])
    for wait in waits:
        state = states.get(wait.entrance_id)
        if state is None or state.state not in ACTIVE:
            continue
        graph = engine.graphs.get(conn, state.journey_id)
        if graph is None or graph.journey.status != "live":
            continue
        step = graph.by_id.get(wait.step_id)
        if step is None or str(step.data.get("change", "entered")) != change.change:
            continue
        if change.created_at < state.arrived_at:
            continue
        conn.execute(
            sa.delete(journey_timers).where(
                journey_timers.c.entrance_id == state.id, journey_timers.c.kind == "timeout"
            )
        )
        if conn.execute(
            sa.delete(journey_waits).where(journey_waits.c.entrance_id == state.id)
        ).rowcount:
            engine.advance(conn, graph, state, profile, tx, resumed="yes")


def schedule_tick(engine: JourneyEngine, now: int, *, last: dict[int, int]) -> int:
    """Run the schedule entrances' occurrences due by ``now``; answers users entered.
    ``last`` (step id → µs) remembers how far each step was looked at in this process."""
    entered = 0
    with engine.reader.connect() as conn:
        live = engine.graphs.live(conn)
    for graph in live:
        for step in graph.entrances():
            if step.data.get("trigger") != "schedule":
                continue
            anchor = graph.journey.published_at or graph.journey.created_at
            with engine.reader.connect() as conn:
                tz = engine.project_timezone(conn, graph.journey.project_id)
                done = conn.execute(
                    sa.select(sa.func.max(journey_schedule_runs.c.occurrence_at)).where(
                        journey_schedule_runs.c.step_id == step.id
                    )
                ).scalar()
            since = max(anchor, done or 0, last.get(step.id, 0))
            for at in occurrences_between(str(step.data["schedule"]), anchor, since, now, tz):
                entered += _run_occurrence(engine, graph, step, at, now)
            last[step.id] = now
    return entered


def _run_occurrence(engine: JourneyEngine, graph: Any, step: Any, at: int, now: int) -> int:
    with engine.writer.begin() as conn:
        if not insert_ignore(
            conn,
            journey_schedule_runs,
            {"step_id": step.id, "occurrence_at": at, "created_at": now},
        ):
            return 0  # another worker ran it
        members = [
            r.profile_id
            for r in conn.execute(
                sa.select(list_members.c.profile_id).where(
                    list_members.c.list_id == int(step.data["list_id"])
                )
            )
        ]
        tx = Tx(now)
        people = engine.load_profiles(conn, members)
        count = 0
        for profile_id in members:
            profile = people.get(profile_id)
            if profile is None or profile.project_id != graph.journey.project_id:
                continue
            body = {"name": "schedule", "data": {"occurrence_at": at}, "created_at": at}
            if engine.enter(conn, graph, step, profile, tx, event=body, unique=f"schedule:{at}"):
                count += 1
        tx.flush(conn)
    return count
