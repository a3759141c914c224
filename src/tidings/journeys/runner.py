"""Entering a journey: the entrance row (one per journey, entrance, user, key and
occurrence: the unique constraint decides), then its first steps, in the caller's
transaction. ``JourneyEngine`` (``engine.py``) adds the timers, the outbox and the API's
trigger; the batch hook (``hook.py``) and the list and schedule sources (``sources.py``)
call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tidings.domain.ids import new_ulid
from tidings.domain.journeys import (
    Step,
    in_holdout,
)
from tidings.journeys.advancing import Clock
from tidings.journeys.effects import EffectsRunner
from tidings.journeys.graphs import Graph
from tidings.journeys.sql import insert_ignore
from tidings.journeys.state import (
    ACTIVE,
    EntranceState,
    Profile,
    Tx,
)
from tidings.store.tables_journeys import (
    journey_entrances,
)

__all__ = ["Clock", "Entering", "StepRunner"]


@dataclass(frozen=True, slots=True)
class Entering:
    """A user about to enter: the row to insert and what starting needs."""

    graph: Graph
    entrance: Step
    profile: Profile
    row: dict[str, Any]


def _unique_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["journey_id"],
        row["entrance_step_id"],
        row["profile_id"],
        row["entrance_key"],
        row["occurrence"],
    )


class StepRunner(EffectsRunner):
    """Enters users and runs their steps; see ``engine.py`` for the transactions."""

    # -- entering --------------------------------------------------------------------------

    def enter(
        self,
        conn: Connection,
        graph: Graph,
        entrance: Step,
        profile: Profile,
        tx: Tx,
        *,
        event: Mapping[str, Any] | None,
        key: str = "",
        unique: str | None = None,
    ) -> int | None:
        """Enter ``profile`` at ``entrance``; the new entrance's id, or None when it may
        not enter (not live, entered already, the cap). ``unique`` names this occasion
        (the event's message id, the request's idempotency key) for entrances that allow
        concurrent entries; re-entry otherwise counts earlier entrances, and the unique
        constraint turns a concurrent duplicate into a no-op either way."""
        found = self.candidate(
            conn, graph, entrance, profile, tx, event=event, key=key, unique=unique
        )
        if found is None:
            return None
        entered = self.insert_entrances(conn, [found])
        if not entered:
            return None
        self.start(conn, entered[0][0], entered[0][1], tx)
        return entered[0][1]

    def candidate(
        self,
        conn: Connection,
        graph: Graph,
        entrance: Step,
        profile: Profile,
        tx: Tx,
        *,
        event: Mapping[str, Any] | None,
        key: str = "",
        unique: str | None = None,
        batch: dict[tuple[int, str], int] | None = None,
    ) -> Entering | None:
        """The entrance row to insert, or None when the rules say no. ``batch`` counts
        candidates of this batch per (journey, profile), for the entries cap."""
        journey = graph.journey
        if journey.status != "live" or journey.archived:
            return None
        data = entrance.data
        cap = graph.settings.max_entries_per_user
        if cap is not None:
            tx.write_pending(conn)
            count = conn.execute(
                sa.select(sa.func.count()).where(
                    journey_entrances.c.journey_id == journey.id,
                    journey_entrances.c.profile_id == profile.id,
                )
            ).scalar_one()
            if batch is not None:
                count += batch.get((journey.id, profile.id), 0)
            if count >= cap:
                return None
        if data.get("trigger") == "schedule" and unique:
            occurrence = unique[:64]  # each run of a schedule is an occasion of its own
        elif not data.get("multiple"):
            occurrence = "0"
        elif data.get("concurrent"):
            occurrence = (unique or new_ulid())[:64]
        else:
            tx.write_pending(conn)
            same = conn.execute(
                sa.select(journey_entrances.c.state).where(
                    journey_entrances.c.journey_id == journey.id,
                    journey_entrances.c.profile_id == profile.id,
                    journey_entrances.c.entrance_step_id == entrance.id,
                    journey_entrances.c.entrance_key == key,
                )
            ).all()
            if any(s in ACTIVE for (s,) in same):
                return None
            occurrence = str(len(same))
        if batch is not None:
            batch[(journey.id, profile.id)] = batch.get((journey.id, profile.id), 0) + 1
        row = {
            "project_id": journey.project_id,
            "journey_id": journey.id,
            "entrance_step_id": entrance.id,
            "profile_id": profile.id,
            "entrance_key": key[:255],
            "occurrence": occurrence,
            "step_id": entrance.id,
            "state": "running",
            "event": dict(event) if event is not None else None,
            "holdout": in_holdout(journey.id, profile.id, graph.settings.holdout_percent),
            "created_at": tx.now,
            "updated_at": tx.now,
        }
        return Entering(graph, entrance, profile, row)

    @staticmethod
    def insert_entrances(
        conn: Connection, candidates: Sequence[Entering]
    ) -> list[tuple[Entering, int]]:
        """Insert the candidates' rows in one statement; those the unique constraint
        refuses (entered already, here or by a concurrent transaction) are left out."""
        if not candidates:
            return []
        if len(candidates) == 1:
            new_id = insert_ignore(
                conn, journey_entrances, candidates[0].row, returning=journey_entrances.c.id
            )
            return [] if new_id is None else [(candidates[0], int(new_id))]
        by_key: dict[tuple[Any, ...], Entering] = {}
        for c in candidates:
            by_key.setdefault(_unique_key(c.row), c)  # the first of a batch's duplicates
        e = journey_entrances
        stmt = (
            (postgresql.insert(e) if conn.dialect.name == "postgresql" else sqlite.insert(e))
            .on_conflict_do_nothing()
            .returning(
                e.c.id,
                e.c.journey_id,
                e.c.entrance_step_id,
                e.c.profile_id,
                e.c.entrance_key,
                e.c.occurrence,
            )
        )
        rows = conn.execute(stmt, [c.row for c in by_key.values()]).all()
        found = [(by_key[tuple(r[1:])], int(r[0])) for r in rows]
        return sorted(found, key=lambda pair: pair[1])

    def start(self, conn: Connection, entering: Entering, entrance_id: int, tx: Tx) -> None:
        """Record a new entrance and run it from its entrance step."""
        graph, entrance, profile, row = (
            entering.graph,
            entering.entrance,
            entering.profile,
            entering.row,
        )
        journey = graph.journey
        now = tx.now
        tx.path_entered.append(
            {
                "entrance_id": entrance_id,
                "step_id": entrance.id,
                "entered_at": now,
                "completed_at": now,
                "outcome": "entered",
            }
        )
        tx.entered(journey.id, entrance.id)
        tx.completed(journey.id, entrance.id)
        self.fact(tx, profile, "journey_entered", journey.id, entrance_id, entrance.id)
        state = EntranceState(
            id=entrance_id,
            project_id=journey.project_id,
            journey_id=journey.id,
            entrance_step_id=entrance.id,
            profile_id=profile.id,
            step_id=entrance.id,
            state="running",
            event=dict(row["event"] or {}),
            holdout=bool(row["holdout"]),
            branch=None,
            arrived_at=now,
        )
        first = graph.steps.get(entrance.child() or "")
        if first is None:
            self._end(conn, state, profile, tx)
            self._save(conn, state, tx)
            return
        self._move(conn, graph, state, first, tx)
        self.advance(conn, graph, state, profile, tx)
