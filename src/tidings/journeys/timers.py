"""Timers: firing due delays in bulk, and running the ready queue entrance by entrance.

A delay step's timer is a row of ``journey_timers`` (kind ``run``, at the delay step,
``due_at``). **Firing** it means: the delay step completes and the entrance moves to the
delay's next step, ready to run. ``fire_due`` does that set-based, for all due timers of a
(journey, delay step) group at once, in one transaction of a few statements per up to
``BULK`` timers: claim them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one
writer at a time), move the entrances still on that step (one ``UPDATE … RETURNING``),
complete the delay's path rows and open the next step's, count both, and turn each
claimed timer into a ready row (kind ``ready``, at the next step, its due time kept); the
timers of entrances that left the step meanwhile are deleted. A worker that dies
holding a claim rolls back: its locks go and another worker fires those timers. Nothing
fires twice: a fired timer is a ``ready`` row, which bulk firing never takes (a next
step that is itself a delay is decided by ``run_ready``, which sets its own timer).

``run_ready`` then runs the ready rows as it runs every other due timer: entrance by
entrance (``advance``), oldest due first, in the transaction that deletes the row, at
the engine's step rate. So "fired" (due → delay completed) is a bulk operation, while
"the next step ran" (due → e.g. the send enqueued) waits for the ready queue.

Bulk firing takes delays of the ``duration`` format only: their due time depends on the
arrival and the step's duration alone (an edit of a live delay's duration re-decides its
waiting entrances, see ``JourneyStore.put_steps``). Time-of-day and date delays are
decided again when due (the user's timezone, a date trait may have changed), so they run
entrance by entrance, as do delays whose next step is missing (the entrance ends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tidings.journeys.graphs import Graph
from tidings.journeys.runner import StepRunner
from tidings.journeys.sql import add_counts, id_values, ids_in, skip_locked
from tidings.journeys.state import ACTIVE, EntranceState, Profile, Tx, stats_shard
from tidings.journeys.waits import happened_meanwhile
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_rates,
    journey_step_stats,
    journey_timers,
    journey_waits,
    journeys,
)

__all__ = ["BULK", "TimerRunner"]

logger = logging.getLogger(__name__)

BULK = 5000  # timers fired per transaction (SQLite takes at most 32,766 parameters)


def bulk_steps(graph: Graph) -> dict[int, int]:
    """The delay steps of ``graph`` whose due timers fire in bulk: step id → next step id."""
    out: dict[int, int] = {}
    for step in graph.steps.values():
        if step.type != "delay" or step.data.get("format", "duration") != "duration":
            continue
        following = graph.steps.get(step.child() or "")
        if following is not None:
            out[step.id] = following.id
    return out


class TimerRunner(StepRunner):
    """The step runner with its timers: bulk firing, the ready queue, the worker's sleep."""

    def run_due(self, now: int | None = None, limit: int = 500) -> int:
        """One round: fire due delays in bulk (``fire_due``), then run up to ``limit``
        ready entrances and other due timers (``run_ready``). Answers the timers handled
        (a fired delay's row counts again when its next step runs)."""
        now = self.clock() if now is None else now
        fired = 0
        try:
            fired = self.fire_due(now)
        except sa.exc.OperationalError:
            raise
        except Exception:  # the ready queue takes them one by one instead
            logger.exception("firing journey timers in bulk failed")
        return fired + self.run_ready(now, limit)

    def fire_due(
        self,
        now: int | None = None,
        limit: int = BULK,
        committed: Callable[[int], None] | None = None,
    ) -> int:
        """Fire every due timer of live journeys' duration delays, group by group, up
        to ``limit`` a transaction, until none is due; answers how many were claimed.
        ``committed`` is told each transaction's count after its commit."""
        now = self.clock() if now is None else now
        with self.reader.connect() as conn:
            live = self.graphs.live(conn)
            steps: dict[int, tuple[Graph, int]] = {}
            for graph in live:
                for step_id, next_id in bulk_steps(graph).items():
                    steps[step_id] = (graph, next_id)
            if not steps:
                return 0
            t = journey_timers
            groups = conn.execute(
                sa.select(t.c.step_id)
                .where(t.c.kind == "run", t.c.due_at <= now, t.c.step_id.in_(sorted(steps)))
                .distinct()
            ).all()
        total = 0
        for (step_id,) in groups:
            graph, next_id = steps[step_id]
            while True:
                with self.writer.begin() as conn:
                    n = self._fire_group(conn, graph, step_id, next_id, now, limit)
                if n and committed is not None:
                    committed(n)
                total += n
                if n < limit:
                    break
        return total

    def _fire_group(
        self, conn: Connection, graph: Graph, step_id: int, next_id: int, now: int, limit: int
    ) -> int:
        journey_id = graph.journey.id
        current = conn.execute(
            sa.select(journeys.c.status, journeys.c.updated_at).where(journeys.c.id == journey_id)
        ).first()
        if current is None or current.status != "live":
            return 0
        if current.updated_at != graph.journey.updated_at:
            self.graphs.invalidate()
            return 0  # edited since the graph was read: the next round reads it again
        t, e, p = journey_timers, journey_entrances, journey_path
        claimed = conn.execute(
            skip_locked(
                conn,
                sa.select(t.c.id, t.c.entrance_id)
                .where(
                    t.c.journey_id == journey_id,
                    t.c.step_id == step_id,
                    t.c.kind == "run",
                    t.c.due_at <= now,
                )
                .order_by(t.c.due_at)
                .limit(limit),
            )
        ).all()
        if not claimed:
            return 0
        moved = set(
            conn.execute(
                sa.update(e)
                .where(
                    ids_in(conn, e.c.id, [r.entrance_id for r in claimed]),
                    e.c.step_id == step_id,
                    e.c.state.in_(ACTIVE),
                )
                .values(step_id=next_id, state="running", updated_at=now)
                .returning(e.c.id)
            ).scalars()
        )
        stale = [r.id for r in claimed if r.entrance_id not in moved]
        if stale:  # left the step meanwhile (exited, merged, moved by an edit)
            conn.execute(sa.delete(t).where(ids_in(conn, t.c.id, stale)))
        if not moved:
            return len(claimed)
        ids = sorted(moved)
        conn.execute(
            sa.update(t)
            .where(ids_in(conn, t.c.id, [r.id for r in claimed if r.entrance_id in moved]))
            .values(step_id=next_id, kind="ready")
        )
        conn.execute(
            sa.update(p)
            .where(ids_in(conn, p.c.entrance_id, ids), p.c.step_id == step_id)
            .values(completed_at=now, outcome="completed")
        )
        opened = id_values(conn, ids).add_columns(
            sa.literal(next_id, sa.Integer), sa.literal(now, sa.BigInteger)
        )
        insert = postgresql.insert(p) if conn.dialect.name == "postgresql" else sqlite.insert(p)
        conn.execute(
            insert.from_select(
                ["entrance_id", "step_id", "entered_at"], opened.where(sa.true())
            ).on_conflict_do_nothing()
        )
        tx = Tx(now)
        tx.counts[(journey_id, step_id)][1] += len(ids)
        tx.counts[(journey_id, next_id)][0] += len(ids)
        tx.steps_run += len(ids)
        tx.flush(conn)
        return len(claimed)

    def run_ready(self, now: int | None = None, limit: int = 500) -> int:
        """Run the entrances of due timers of live journeys (at most ``limit``) one by one
        (``advance``), in one transaction; answers how many. These are the ready queue
        (entrances a bulk firing moved past their delay), the timers ``fire_due`` does not
        take (quiet hours, throttles, time-of-day and date delays, wait timeouts, moves),
        and any it left. A failure applies them one by one, so that one bad entrance
        (marked failed) does not hold up the rest."""
        now = self.clock() if now is None else now
        try:
            with self.writer.begin() as conn:
                return self._run_ready(conn, now, limit)
        except sa.exc.OperationalError:
            raise
        except Exception:
            logger.exception("journey timers failed as a batch; applying them one by one")
        done = 0
        for _ in range(limit):
            try:
                with self.writer.begin() as conn:
                    n = self._run_ready(conn, now, 1)
            except Exception as exc:
                logger.exception("a journey timer failed")
                self._fail_first_due(now, exc)
                continue
            if n == 0:
                break
            done += n
        return done

    def _fail_first_due(self, now: int, exc: Exception) -> None:
        with self.writer.begin() as conn:
            row = conn.execute(
                skip_locked(
                    conn,
                    sa.select(journey_timers)
                    .where(journey_timers.c.due_at <= now)
                    .order_by(journey_timers.c.due_at)
                    .limit(1),
                )
            ).first()
            if row is None:
                return
            conn.execute(sa.delete(journey_timers).where(journey_timers.c.id == row.id))
            conn.execute(
                sa.update(journey_entrances)
                .where(journey_entrances.c.id == row.entrance_id)
                .values(state="failed", ended_at=now, updated_at=now)
            )
            add_counts(
                conn,
                journey_step_stats,
                ("journey_id", "step_id", "shard"),
                [
                    {
                        "journey_id": row.journey_id,
                        "step_id": row.step_id,
                        "shard": stats_shard(),
                        "entered": 0,
                        "completed": 0,
                        "failed": 1,
                    }
                ],
            )
            logger.warning("journey entrance %d failed: %s", row.entrance_id, exc)

    def _run_ready(self, conn: Connection, now: int, limit: int) -> int:
        live = sa.select(journeys.c.id).where(journeys.c.status == "live")
        query = (
            sa.select(journey_timers)
            .where(journey_timers.c.due_at <= now, journey_timers.c.journey_id.in_(live))
            .order_by(journey_timers.c.due_at)
            .limit(limit)
        )
        due = conn.execute(skip_locked(conn, query, journey_timers)).all()
        if not due:
            return 0
        conn.execute(
            sa.delete(journey_timers).where(ids_in(conn, journey_timers.c.id, [t.id for t in due]))
        )
        tx = Tx(now)
        self.graphs.refresh(conn)
        states = self.states(conn, [t.entrance_id for t in due])
        timeouts = {t.entrance_id: t.due_at for t in due if t.kind == "timeout"}
        people = self.load_profiles(conn, {s.profile_id for s in states.values()})
        for timer in due:
            state = states.get(timer.entrance_id)
            if state is None or state.state not in ACTIVE:
                continue
            graph = self.graphs.cached(state.journey_id)
            profile = people.get(state.profile_id)
            if graph is None or profile is None:
                continue
            resumed = None
            if timer.kind in ("timeout", "recheck"):
                resumed = self._wait_ends(conn, graph, state, profile, timer, now, timeouts)
                if resumed is None:
                    continue  # the awaited event came first, or (recheck) nothing yet
            elif timer.step_id != state.step_id:
                continue  # a timer left from a step the entrance has moved on from
            self.advance(conn, graph, state, profile, tx, resumed)
        tx.flush(conn)
        return len(due)

    @staticmethod
    def _wait_ends(
        conn: Connection,
        graph: Graph,
        state: EntranceState,
        profile: Profile,
        timer: Any,
        now: int,
        timeouts: dict[int, int],
    ) -> str | None:
        """A wait's timeout (or a recheck after the journey was off): the path it leaves
        on, or None when it does not end now. Events and list changes from while the
        journey was off count (``waits.py``); a journey live since the entrance arrived
        had its waits ended by them already."""
        w, t = journey_waits, journey_timers
        wait = conn.execute(sa.select(w).where(w.c.entrance_id == state.id)).first()
        step = graph.by_id.get(wait.step_id) if wait is not None else None
        if wait is None or step is None:
            return None
        hit = False
        if (graph.journey.live_at or 0) > state.arrived_at:
            until = timer.due_at if timer.kind == "timeout" else now
            if timer.kind == "recheck":  # what came after the wait's timeout does not count
                timeout = (
                    timeouts.get(state.id)
                    or conn.execute(
                        sa.select(t.c.due_at).where(
                            t.c.entrance_id == state.id, t.c.kind == "timeout"
                        )
                    ).scalar()
                )
                until = min(until, timeout if timeout is not None else until)
            hit = happened_meanwhile(conn, step, state, wait, profile, until=until, now=now)
        if timer.kind == "recheck" and not hit:
            return None
        other = "timeout" if timer.kind == "recheck" else "recheck"
        conn.execute(sa.delete(t).where(t.c.entrance_id == state.id, t.c.kind == other))
        if not conn.execute(sa.delete(w).where(w.c.entrance_id == state.id)).rowcount:
            return None
        return "yes" if hit else "no"

    def prune(self, now: int, keep: int = 2 * 86_400_000_000) -> None:
        """Forget rate windows (balancer, throttle) older than ``keep``."""
        with self.writer.begin() as conn:
            conn.execute(sa.delete(journey_rates).where(journey_rates.c.window_start < now - keep))

    def next_due(self) -> int | None:
        """When the next timer of a live journey is due (None: none is)."""
        live = sa.select(journeys.c.id).where(journeys.c.status == "live")
        with self.reader.connect() as conn:
            return conn.execute(
                sa.select(sa.func.min(journey_timers.c.due_at)).where(
                    journey_timers.c.journey_id.in_(live)
                )
            ).scalar()
