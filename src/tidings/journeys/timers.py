"""Timers: firing due delays in bulk, and running the ready queue entrance by entrance.

A delay step's timer is a row of ``journey_timers`` (kind ``run``, at the delay step,
``due_at``). **Firing** it means: the delay step completes and the entrance is queued to
run the delay's next step. ``fire_due`` does that set-based, for all due timers of a
(journey, delay step) group at once, in transactions of up to ``BULK`` timers, and writes
as little as it can per timer, because a burst of timers due in the same second is as
large as the list or schedule that made it: each claimed timer is deleted and, when its
entrance is still waiting at that delay, one row goes into ``journey_ready`` (the
delay, the due time, the firing time); the delay's completions and the next step's
entries are counted once per group. On PostgreSQL that is one statement (claimed with
``FOR UPDATE SKIP LOCKED``, so workers side by side take different timers); on SQLite
(one writer at a time) an insert and a delete of the same first ``BULK`` timers. A
worker that dies holding a claim rolls back: its locks go and another worker fires those
timers. Nothing fires twice: the timer is gone in the transaction that fired it.

``run_ready`` then runs the ready rows with every other due timer, oldest due first,
entrance by entrance, in the transaction that deletes the row, at the engine's step rate:
a ready row's entrance completes the delay and enters the next step as of the firing
(``fired_at``: its path rows say when the delay really completed), then runs from there
(``advance``). Until then the entrance's own row still names the delay; what reads
positions (per-step counts, one user's path: ``reports.py``) reads the ready rows too,
so the answer is the same before and after. An entrance that left the delay meanwhile (it
exited, merged, or an edit moved it) is no longer at ``step_id`` and its row is dropped.
So "fired" (due → delay completed) is a bulk operation, while "the next step ran"
(due → e.g. the send enqueued) waits for the ready queue.

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
from sqlalchemy.engine import Connection

from tidings.journeys.graphs import Graph
from tidings.journeys.runner import StepRunner
from tidings.journeys.sql import add_counts, ids_in, run_many, skip_locked
from tidings.journeys.state import ACTIVE, EntranceState, Profile, Tx, stats_shard
from tidings.journeys.waits import happened_meanwhile
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_rates,
    journey_ready,
    journey_step_stats,
    journey_timers,
    journey_waits,
    journeys,
)

__all__ = ["BULK", "TimerRunner"]

logger = logging.getLogger(__name__)

# Timers fired per transaction. SQLite: a few milliseconds of its one writer lock at a
# time. PostgreSQL: the claim's index scan must step over the entries of timers deleted by
# the transactions before it (until vacuum), so each transaction takes many more.
BULK = {"sqlite": 5_000, "postgresql": 50_000}
_MAX_ID = 2**63 - 1
_ACTIVE_SQL = "('running', 'waiting')"

# Firing one group's due timers: claim up to ``n`` (oldest due first), delete them, and
# put those whose entrance is still waiting at the delay into the ready queue; answers
# (claimed, fired). One statement on PostgreSQL (the rows never travel to Python; SKIP
# LOCKED leaves another worker's claims to it). On SQLite (one writer at a time) the
# claim is the first ``n`` in (due_at, id) order, bounded by the n-th: the insert and the
# delete take exactly those. No ``ON CONFLICT`` (on PostgreSQL it doubles the insert's
# cost): an entrance has one ``run`` timer, deleted here, so its ready row is new; were
# it not, the firing would fail and the ready queue run those timers one by one.
_FIRE_PG = (
    "WITH c AS (SELECT id FROM journey_timers WHERE journey_id = %(j)s AND step_id = %(s)s"
    " AND kind = 'run' AND due_at <= %(now)s ORDER BY due_at LIMIT %(n)s"
    " FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM journey_timers AS t USING c WHERE t.id = c.id"
    " RETURNING t.entrance_id, t.due_at),"
    " r AS (INSERT INTO journey_ready (due_at, entrance_id, journey_id, step_id, fired_at)"
    " SELECT d.due_at, d.entrance_id, %(j)s, %(s)s, %(now)s FROM d"
    " JOIN journey_entrances AS e ON e.id = d.entrance_id"
    f" WHERE e.step_id = %(s)s AND e.state IN {_ACTIVE_SQL}"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM r)"
)
_CUT_SQLITE = (
    "SELECT due_at, id FROM journey_timers WHERE step_id = :s AND kind = 'run'"
    " AND due_at <= :now AND journey_id = :j ORDER BY due_at, id LIMIT 1 OFFSET :n - 1"
)
_CLAIMED_SQLITE = (
    "t.step_id = :s AND t.kind = 'run' AND t.due_at <= :now AND t.journey_id = :j"
    " AND (t.due_at, t.id) <= (:cd, :ci)"
)
_READY_SQLITE = (
    "INSERT INTO journey_ready (due_at, entrance_id, journey_id, step_id, fired_at)"
    " SELECT t.due_at, t.entrance_id, :j, :s, :now FROM journey_timers AS t"
    " JOIN journey_entrances AS e ON e.id = t.entrance_id"
    f" WHERE {_CLAIMED_SQLITE} AND e.step_id = :s AND e.state IN {_ACTIVE_SQL}"
)
_DELETE_SQLITE = f"DELETE FROM journey_timers AS t WHERE {_CLAIMED_SQLITE}"


def _due_timers(now: int) -> sa.Select[Any]:
    """Due timers of live journeys, oldest first."""
    live = sa.select(journeys.c.id).where(journeys.c.status == "live")
    t = journey_timers
    return sa.select(t).where(t.c.due_at <= now, t.c.journey_id.in_(live)).order_by(t.c.due_at)


def _due_ready(now: int) -> sa.Select[Any]:
    """Due ready rows of live journeys, in the queue's key order."""
    r = journey_ready
    return (
        sa.select(r)
        .where(
            r.c.due_at <= now,
            # Not "journey_id IN (live ones)": PostgreSQL would then read all the due rows
            # and sort them (the queue's statistics are usually those of an empty table)
            # instead of the key's first rows.
            ~sa.exists().where(journeys.c.id == r.c.journey_id, journeys.c.status != "live"),
        )
        .order_by(r.c.due_at, r.c.entrance_id)
    )


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
        limit: int | None = None,
        committed: Callable[[int], None] | None = None,
    ) -> int:
        """Fire every due timer of live journeys' duration delays, group by group, up
        to ``limit`` a transaction, until none is due; answers how many were claimed.
        ``committed`` is told each transaction's count after its commit."""
        now = self.clock() if now is None else now
        with self.reader.connect() as conn:
            if limit is None:
                limit = BULK.get(conn.dialect.name, 5_000)
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
        params = {"j": journey_id, "s": step_id, "now": now, "n": limit}
        if conn.dialect.name == "postgresql":
            # The commit need not wait for the flush: a firing lost to a crash is done
            # again from its timers (no effect left the transaction), and anything that
            # builds on it commits later, which flushes the firing first.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            claimed, fired = conn.exec_driver_sql(_FIRE_PG, params).one()
        else:
            cut = conn.exec_driver_sql(_CUT_SQLITE, params).first()
            params["cd"], params["ci"] = (now, _MAX_ID) if cut is None else (cut[0], cut[1])
            fired = conn.exec_driver_sql(_READY_SQLITE, params).rowcount
            claimed = conn.exec_driver_sql(_DELETE_SQLITE, params).rowcount
        if fired:
            tx = Tx(now)
            tx.counts[(journey_id, step_id)][1] += fired
            tx.counts[(journey_id, next_id)][0] += fired
            tx.steps_run += fired
            tx.flush(conn)
        return int(claimed)

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
        """The oldest due timer or ready row (the one ``_run_ready(…, 1)`` failed on) is
        removed and its entrance marked failed, so that it does not hold up the rest."""
        t, r = journey_timers, journey_ready
        with self.writer.begin() as conn:
            timer = conn.execute(skip_locked(conn, _due_timers(now).limit(1), t)).first()
            ready = conn.execute(skip_locked(conn, _due_ready(now).limit(1), r)).first()
            if ready is not None and (timer is None or ready.due_at < timer.due_at):
                conn.execute(
                    sa.delete(r).where(
                        r.c.due_at == ready.due_at, r.c.entrance_id == ready.entrance_id
                    )
                )
                row: Any = ready
                # The firing counted it at the delay's next step: it failed there.
                step_id = ready.step_id
                graph = self.graphs.get(conn, ready.journey_id)
                delay = graph.by_id.get(ready.step_id) if graph is not None else None
                if graph is not None and delay is not None:
                    following = graph.steps.get(delay.child() or "")
                    step_id = following.id if following is not None else step_id
            elif timer is not None:
                conn.execute(sa.delete(t).where(t.c.id == timer.id))
                row, step_id = timer, timer.step_id
            else:
                return
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
                        "step_id": step_id,
                        "shard": stats_shard(),
                        "entered": 0,
                        "completed": 0,
                        "failed": 1,
                    }
                ],
            )
            logger.warning("journey entrance %d failed: %s", row.entrance_id, exc)

    def _run_ready(self, conn: Connection, now: int, limit: int) -> int:
        t, r = journey_timers, journey_ready
        due = conn.execute(skip_locked(conn, _due_timers(now).limit(limit), t)).all()
        ready = conn.execute(skip_locked(conn, _due_ready(now).limit(limit), r)).all()
        if not due and not ready:
            return 0
        # Oldest due first across both, ``limit`` in all (the rest stay for the next round).
        taken = sorted([(x.due_at, 0, x) for x in due] + [(x.due_at, 1, x) for x in ready])
        taken = taken[:limit]
        due = [x for _, kind, x in taken if kind == 0]
        ready = [x for _, kind, x in taken if kind == 1]
        if due:
            conn.execute(sa.delete(t).where(ids_in(conn, t.c.id, [x.id for x in due])))
        if ready:
            run_many(
                conn,
                "DELETE FROM journey_ready WHERE due_at = ? AND entrance_id = ?",
                [(x.due_at, x.entrance_id) for x in ready],
                pg="DELETE FROM journey_ready AS r USING unnest(%s::bigint[], %s::bigint[])"
                " AS u(d, e) WHERE r.due_at = u.d AND r.entrance_id = u.e",
            )
        tx = Tx(now)
        self.graphs.refresh(conn)
        states = self.states(conn, [x.entrance_id for _, _, x in taken])
        timeouts = {x.entrance_id: x.due_at for x in due if x.kind == "timeout"}
        people = self.load_profiles(conn, {s.profile_id for s in states.values()})
        for _, kind, timer in taken:
            state = states.get(timer.entrance_id)
            if state is None or state.state not in ACTIVE:
                continue
            graph = self.graphs.cached(state.journey_id)
            profile = people.get(state.profile_id)
            if graph is None or profile is None:
                continue
            resumed = None
            if kind == 1:
                if not self._past_delay(conn, graph, state, timer, profile, tx):
                    continue
            elif timer.kind in ("timeout", "recheck"):
                resumed = self._wait_ends(conn, graph, state, profile, timer, now, timeouts)
                if resumed is None:
                    continue  # the awaited event came first, or (recheck) nothing yet
            elif timer.step_id != state.step_id:
                continue  # a timer left from a step the entrance has moved on from
            self.advance(conn, graph, state, profile, tx, resumed)
        tx.flush(conn)
        return len(taken)

    def _past_delay(
        self,
        conn: Connection,
        graph: Graph,
        state: EntranceState,
        ready: Any,
        profile: Profile,
        tx: Tx,
    ) -> bool:
        """A fired delay's entrance (a ``journey_ready`` row) moves to the delay's next
        step, as of the firing: the delay's path row completes and the next one opens at
        ``fired_at`` (the firing counted both). False when it is no longer at that delay
        (it left, or an edit moved it, meanwhile): the row is dropped."""
        if state.step_id != ready.step_id:
            return False
        delay = graph.by_id.get(ready.step_id)
        following = graph.steps.get((delay.child() if delay is not None else None) or "")
        tx.path_done.append(
            {"e": state.id, "s": state.step_id, "c": ready.fired_at, "o": "completed"}
        )
        if following is None:  # an edit removed the next step since: the entrance ends
            self._end(conn, state, profile, tx)
            self._save(conn, state, tx)
            return False
        state.step_id = following.id
        state.state = "running"
        state.arrived_at = ready.fired_at
        tx.path_new.append(
            {"entrance_id": state.id, "step_id": following.id, "entered_at": ready.fired_at}
        )
        return True

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
            dues = [
                conn.execute(
                    sa.select(sa.func.min(table.c.due_at)).where(table.c.journey_id.in_(live))
                ).scalar()
                for table in (journey_timers, journey_ready)
            ]
        return min((d for d in dues if d is not None), default=None)
