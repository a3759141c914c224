"""Journeys' definitions as the engine reads them: a journey row, its step graph (current
steps by uuid, every step it ever had by id), and the rule that moves users off steps an
edit removed. A change of a journey or its graph always raises ``journeys.updated_at``,
which is what the engine's graph cache compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from tidings.domain.errors import ValidationFailed
from tidings.domain.journeys import (
    Child,
    JourneySettings,
    Step,
    parse_settings,
)
from tidings.journeys.sql import insert_ignore
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_steps,
    journey_timers,
    journey_waits,
    journeys,
)

__all__ = [
    "Graph",
    "JourneyRow",
    "children_json",
    "journey_of",
    "load_graph",
    "move_off_removed",
    "recheck_waits",
    "redecide_delays",
    "step_of",
]


@dataclass(frozen=True, slots=True)
class JourneyRow:
    id: int
    project_id: int
    name: str
    description: str | None
    tags: list[str]
    status: str
    archived: bool
    settings: dict[str, Any]
    created_at: int
    updated_at: int
    published_at: int | None
    live_at: int | None = None  # when it last went live (published or turned back on)

    @property
    def parsed_settings(self) -> JourneySettings:
        return parse_settings(self.settings)


@dataclass(frozen=True, slots=True)
class Graph:
    """A journey with its current steps (by uuid) and every step it ever had (by id)."""

    journey: JourneyRow
    steps: dict[str, Step]
    by_id: dict[int, Step]
    settings: JourneySettings

    def entrances(self) -> list[Step]:
        return [s for s in self.steps.values() if s.type == "entrance"]


def journey_of(row: Any) -> JourneyRow:
    return JourneyRow(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        description=row.description,
        tags=list(row.tags or []),
        status=row.status,
        archived=bool(row.archived),
        settings=dict(row.settings or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        published_at=row.published_at,
        live_at=row.live_at,
    )


def step_of(row: Any) -> Step:
    children = tuple(
        Child(c["external_id"], c.get("path"), (c.get("data") or {}).get("ratio"))
        for c in row.children or []
    )
    return Step(
        uuid=row.uuid,
        type=row.type,
        data=dict(row.data or {}),
        children=children,
        id=row.id,
        name=row.name,
        data_key=row.data_key,
        x=row.x,
        y=row.y,
    )


def children_json(step: Step) -> list[dict[str, Any]]:
    out = []
    for c in step.children:
        child: dict[str, Any] = {"external_id": c.uuid}
        if c.path is not None:
            child["path"] = c.path
        if c.ratio is not None:
            child["data"] = {"ratio": c.ratio}
        out.append(child)
    return out


def load_graph(conn: Connection, journey_id: int) -> Graph | None:
    row = conn.execute(
        sa.select(journeys).where(journeys.c.id == journey_id, journeys.c.deleted_at.is_(None))
    ).first()
    if row is None:
        return None
    steps: dict[str, Step] = {}
    by_id: dict[int, Step] = {}
    for srow in conn.execute(
        sa.select(journey_steps).where(journey_steps.c.journey_id == journey_id)
    ):
        step = step_of(srow)
        by_id[step.id] = step
        if srow.removed_at is None:
            steps[step.uuid] = step
    journey = journey_of(row)
    try:
        settings = journey.parsed_settings
    except ValidationFailed:
        settings = JourneySettings()
    return Graph(journey, steps, by_id, settings)


def move_off_removed(conn: Connection, graph: Graph, now: int) -> int:
    """Entrances on steps that no longer exist: each moves to the removed step's first
    child that still exists (following removed steps' children, as the graph was before
    the edit), and runs from there at once; with none, it ends (outcome ``step_removed``).
    Their waits and timers at the removed step go. Answers how many were moved or ended."""
    live_ids = {s.id for s in graph.steps.values()}
    stranded = conn.execute(
        sa.select(journey_entrances.c.id, journey_entrances.c.step_id).where(
            journey_entrances.c.journey_id == graph.journey.id,
            journey_entrances.c.state.in_(("running", "waiting")),
            journey_entrances.c.step_id.not_in(live_ids) if live_ids else sa.true(),
        )
    ).all()
    by_uuid_any = {s.uuid: s for s in graph.by_id.values()}
    moved = 0
    for entrance_id, step_id in stranded:
        target: Step | None = None
        seen: set[str] = set()
        current = graph.by_id.get(step_id)
        while current is not None and current.uuid not in seen:
            seen.add(current.uuid)
            first = current.children[0].uuid if current.children else None
            if first is None:
                break
            if first in graph.steps:
                target = graph.steps[first]
                break
            current = by_uuid_any.get(first)
        conn.execute(sa.delete(journey_timers).where(journey_timers.c.entrance_id == entrance_id))
        conn.execute(sa.delete(journey_waits).where(journey_waits.c.entrance_id == entrance_id))
        conn.execute(
            sa.update(journey_path)
            .where(journey_path.c.entrance_id == entrance_id, journey_path.c.step_id == step_id)
            .values(completed_at=now, outcome="step_removed")
        )
        if target is None:
            conn.execute(
                sa.update(journey_entrances)
                .where(journey_entrances.c.id == entrance_id)
                .values(state="done", ended_at=now, updated_at=now)
            )
        else:
            conn.execute(
                sa.update(journey_entrances)
                .where(journey_entrances.c.id == entrance_id)
                .values(step_id=target.id, state="running", updated_at=now)
            )
            insert_ignore(
                conn,
                journey_path,
                {"entrance_id": entrance_id, "step_id": target.id, "entered_at": now},
            )
            # Runs at once, by the timer worker.
            conn.execute(
                sa.insert(journey_timers).values(
                    project_id=graph.journey.project_id,
                    journey_id=graph.journey.id,
                    entrance_id=entrance_id,
                    step_id=target.id,
                    kind="move",
                    due_at=now,
                )
            )
        moved += 1
    return moved


def redecide_delays(conn: Connection, step_ids: list[int], now: int) -> None:
    """Entrances waiting at delays whose settings an edit changed are decided again at
    once (their ``run`` timer becomes a ``move`` due now): the new duration, time or date
    counts from their arrival, as if it had been there all along."""
    t = journey_timers
    moving = sa.select(t.c.entrance_id).where(t.c.kind == "move").scalar_subquery()
    conn.execute(
        sa.update(t)
        .where(t.c.step_id.in_(step_ids), t.c.kind == "run", t.c.entrance_id.not_in(moving))
        .values(kind="move", due_at=now)
    )


def recheck_waits(conn: Connection, journey_id: int, now: int) -> None:
    """A journey turned back on: each of its pending waits is looked at again at once
    (a ``recheck`` timer), against the events and list changes since the entrance
    arrived at the wait, which an off journey did not act on."""
    w, e, t = journey_waits, journey_entrances, journey_timers
    pending = (
        sa.select(w.c.project_id, e.c.journey_id, w.c.entrance_id, w.c.step_id)
        .add_columns(sa.literal("recheck"), sa.literal(now, sa.BigInteger))
        .select_from(w.join(e, e.c.id == w.c.entrance_id))
        .where(e.c.journey_id == journey_id, e.c.state.in_(("running", "waiting")))
    )
    insert = postgresql.insert(t) if conn.dialect.name == "postgresql" else sqlite.insert(t)
    conn.execute(
        insert.from_select(
            ["project_id", "journey_id", "entrance_id", "step_id", "kind", "due_at"], pending
        ).on_conflict_do_nothing()
    )
