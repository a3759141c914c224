"""Running an entrance's steps, in the caller's transaction: decide each step (the pure
``domain.journeys.decide``), record its completion and the move to the next, until the
entrance must wait (a timer, a wait row) or ends. Effects are in ``effects.py``, entering
in ``runner.py``; ``engine.py`` says who calls them in which transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.ingest import LogEntry
from tidings.domain.journeys import (
    Context,
    Decision,
    Step,
    WaitFor,
    decide,
    lookup_path,
)
from tidings.domain.journeys.steps import window_start
from tidings.domain.rules import EventFact
from tidings.domain.sending import Sends
from tidings.journeys.graphs import Graph
from tidings.journeys.sql import add_counts, ids_in
from tidings.journeys.state import (
    ACTIVE,
    EntranceState,
    Graphs,
    Profile,
    Tx,
    json_text,
    profile_of,
)
from tidings.store.database import Writer
from tidings.store.tables import events as events_table
from tidings.store.tables import profiles, projects
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_rates,
    journey_waits,
)

__all__ = ["Advancer", "Clock"]

logger = logging.getLogger(__name__)

Clock = Callable[[], int]  # microseconds since the epoch, UTC
_GATE_EVENTS = 1000  # a gate's event rules read the user's latest events, at most these


class Advancer:
    """Runs entrances' steps; ``_effects`` (a step's sends, events, exits) comes from
    ``EffectsRunner``."""

    def __init__(
        self,
        writer: Writer,
        reader: Engine,
        sends: Sends,
        *,
        partitions: int,
        append: Callable[[list[LogEntry]], None] | None = None,
        clock: Clock,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.sends = sends
        self.partitions = partitions
        self.append = append  # appends to the ingest log (the outbox's drain)
        self.clock = clock
        self.graphs = Graphs()
        self._timezones: dict[int, str] = {}

    # -- reading ---------------------------------------------------------------------------

    def project_timezone(self, conn: Connection, project_id: int) -> str:
        found = self._timezones.get(project_id)
        if found is None:
            found = (
                conn.execute(
                    sa.select(projects.c.timezone).where(projects.c.id == project_id)
                ).scalar_one_or_none()
                or "UTC"
            )
            self._timezones[project_id] = found
        return found

    @staticmethod
    def load_profiles(conn: Connection, ids: Iterable[str]) -> dict[str, Profile]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {
            row.id: profile_of(row)
            for row in conn.execute(
                sa.select(profiles).where(ids_in(conn, profiles.c.id, wanted, sa.String))
            )
        }

    # -- running steps ----------------------------------------------------------------------

    def fact(
        self, tx: Tx, profile: Profile, name: str, journey_id: int, entrance_id: int, step: int
    ) -> None:
        self.emit(
            tx,
            profile,
            name,
            {"journey_id": journey_id, "entrance_id": entrance_id},
            message_id=f"{name}:{entrance_id}",
        )
        del step

    def emit(
        self,
        tx: Tx,
        profile: Profile,
        name: str,
        data: Mapping[str, Any],
        *,
        message_id: str,
    ) -> None:
        payload: dict[str, Any] = {
            "name": name,
            "message_id": message_id,
            "data": dict(data),
            "created_at": tx.now,
            "profile_id": profile.id,
        }
        if profile.external_id:
            payload["external_id"] = profile.external_id
        tx.outbox.append(
            {
                "project_id": profile.project_id,
                "kind": "event",
                "payload": payload,
                "created_at": tx.now,
            }
        )

    def _move(
        self, conn: Connection, graph: Graph, state: EntranceState, step: Step, tx: Tx
    ) -> None:
        state.step_id = step.id
        state.state = "running"
        state.arrived_at = tx.now
        tx.path_new.append({"entrance_id": state.id, "step_id": step.id, "entered_at": tx.now})
        tx.entered(graph.journey.id, step.id)

    def _complete(self, conn: Connection, state: EntranceState, outcome: str, tx: Tx) -> None:
        tx.path_done.append({"e": state.id, "s": state.step_id, "c": tx.now, "o": outcome[:32]})

    def _end(
        self, conn: Connection, state: EntranceState, profile: Profile, tx: Tx, how: str = "done"
    ) -> None:
        state.state = how
        state.ended_at = tx.now
        if how == "done":
            self.fact(tx, profile, "journey_completed", state.journey_id, state.id, state.step_id)

    @staticmethod
    def _save(conn: Connection, state: EntranceState, tx: Tx) -> None:
        tx.saves[state.id] = {
            "step": state.step_id,
            "st": state.state,
            "br": state.branch,
            "at": tx.now,
            "end": state.ended_at,
        }

    def _context(
        self,
        conn: Connection,
        graph: Graph,
        step: Step,
        state: EntranceState,
        profile: Profile,
        tx: Tx,
        resumed: str | None,
    ) -> Context:
        settings = graph.settings
        sent = None
        if step.type == "action" and settings.frequency_cap is not None:
            sent = self.sends.sent_count(
                conn, state.project_id, profile.id, tx.now - settings.frequency_cap[1]
            )
        rates: dict[str, int] = {}
        if step.type in ("balancer", "throttle"):
            start = window_start(step, tx.now)
            rates = {
                child: int(count)
                for child, count in conn.execute(
                    sa.select(journey_rates.c.child, journey_rates.c.count).where(
                        journey_rates.c.step_id == step.id,
                        journey_rates.c.window_start == start,
                    )
                )
            }
        events: list[EventFact] = []
        if step.type == "gate" and '"event"' in json_text(step.data.get("rule")):
            events = [
                EventFact(name=r.name, data=r.data or {}, created_at=r.created_at)
                for r in conn.execute(
                    sa.select(events_table.c.name, events_table.c.data, events_table.c.created_at)
                    .where(
                        events_table.c.project_id == state.project_id,
                        events_table.c.profile_id == profile.id,
                    )
                    .order_by(events_table.c.created_at.desc())
                    .limit(_GATE_EVENTS)
                )
            ]
        return Context(
            project_id=state.project_id,
            journey_id=state.journey_id,
            entrance_id=state.id,
            profile=profile.facts(),
            arrived_at=state.arrived_at,
            timezone=self.project_timezone(conn, state.project_id),
            event=state.event,
            settings=settings,
            holdout=state.holdout,
            events=events,
            sent_count=sent,
            rate_counts=rates,
            resumed=resumed,
        )

    def advance(
        self,
        conn: Connection,
        graph: Graph,
        state: EntranceState,
        profile: Profile,
        tx: Tx,
        resumed: str | None = None,
    ) -> None:
        """Run the entrance from its current step until it must wait or ends."""
        for _ in range(len(graph.by_id) + 2):  # the graph has no cycle: a bound, not a rule
            step = graph.by_id.get(state.step_id)
            if step is None or step.uuid not in graph.steps:
                # Its step was removed meanwhile (the edit moved the others): it ends.
                self._complete(conn, state, "step_removed", tx)
                self._end(conn, state, profile, tx)
                break
            decision = decide(
                step, self._context(conn, graph, step, state, profile, tx, resumed), tx.now
            )
            resumed = None
            tx.steps_run += 1
            if decision.failed is not None:
                logger.info(
                    "journey %d entrance %d failed at step %s: %s",
                    state.journey_id,
                    state.id,
                    step.uuid,
                    decision.failed,
                )
                self._complete(conn, state, "failed", tx)
                tx.failed(graph.journey.id, step.id)
                self._end(conn, state, profile, tx, how="failed")
                break
            if decision.hold_until is not None:
                self._timer(tx, state, "run", decision.hold_until)
                state.state = "waiting"
                break
            if decision.wait is not None:
                self._wait(conn, state, step, decision.wait, profile, tx)
                state.state = "waiting"
                break
            self._complete(conn, state, decision.outcome, tx)
            ended = self._effects(conn, graph, state, step, profile, decision, tx)
            if decision.count_rate is not None:
                add_counts(
                    conn,
                    journey_rates,
                    ("step_id", "child", "window_start"),
                    [
                        {
                            "step_id": step.id,
                            "child": decision.count_rate,
                            "window_start": window_start(step, tx.now),
                            "count": 1,
                        }
                    ],
                )
            if decision.branch is not None:
                state.branch = decision.branch
            tx.completed(graph.journey.id, step.id)
            following = graph.steps.get(decision.next or "")
            if ended or following is None:
                if state.state in ACTIVE:
                    self._end(conn, state, profile, tx)
                break
            self._move(conn, graph, state, following, tx)
        self._save(conn, state, tx)

    def _effects(
        self,
        conn: Connection,
        graph: Graph,
        state: EntranceState,
        step: Step,
        profile: Profile,
        decision: Decision,
        tx: Tx,
    ) -> bool:
        raise NotImplementedError

    @staticmethod
    def _timer(tx: Tx, state: EntranceState, kind: str, due_at: int) -> None:
        """One pending timer per (entrance, kind): this one replaces any before it."""
        tx.timers[(state.id, kind)] = {
            "project_id": state.project_id,
            "journey_id": state.journey_id,
            "entrance_id": state.id,
            "step_id": state.step_id,
            "kind": kind,
            "due_at": due_at,
        }

    def _wait(
        self,
        conn: Connection,
        state: EntranceState,
        step: Step,
        wait: WaitFor,
        profile: Profile,
        tx: Tx,
    ) -> None:
        match = None
        if wait.match_path:
            value = lookup_path(
                state.event.get("data") or {}, wait.match_path.removeprefix("data.")
            )
            match = json_text(value)
        conn.execute(sa.delete(journey_waits).where(journey_waits.c.entrance_id == state.id))
        conn.execute(
            sa.insert(journey_waits).values(
                entrance_id=state.id,
                project_id=state.project_id,
                profile_id=profile.id,
                step_id=step.id,
                event_name=wait.event_name,
                list_id=wait.list_id,
                match_value=match,
            )
        )
        self._timer(tx, state, "timeout", wait.timeout_at)

    # -- loading entrances -------------------------------------------------------------------

    @staticmethod
    def states(conn: Connection, ids: Sequence[int]) -> dict[int, EntranceState]:
        out: dict[int, EntranceState] = {}
        if not ids:
            return out
        rows = conn.execute(
            sa.select(journey_entrances, journey_path.c.entered_at)
            .select_from(
                journey_entrances.outerjoin(
                    journey_path,
                    sa.and_(
                        journey_path.c.entrance_id == journey_entrances.c.id,
                        journey_path.c.step_id == journey_entrances.c.step_id,
                    ),
                )
            )
            .where(ids_in(conn, journey_entrances.c.id, ids))
        ).all()
        for r in rows:
            out[r.id] = EntranceState(
                id=r.id,
                project_id=r.project_id,
                journey_id=r.journey_id,
                entrance_step_id=r.entrance_step_id,
                profile_id=r.profile_id,
                step_id=r.step_id,
                state=r.state,
                event=dict(r.event or {}),
                holdout=bool(r.holdout),
                branch=r.branch,
                arrived_at=r.entered_at if r.entered_at is not None else r.updated_at,
                ended_at=r.ended_at,
            )
        return out
