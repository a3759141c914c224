"""All SQL of journeys' definitions: journeys, their step graphs, counts and paths.

The engine's own SQL (entrances, timers, waits) is in ``engine.py``; both use these
tables. A change of a journey or its graph always raises ``journeys.updated_at``, which
is what the engine's graph cache compares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import Conflict, NotFound, ValidationFailed
from tidings.domain.journeys import (
    Child,
    JourneySettings,
    Step,
    parse_settings,
    publish_errors,
)
from tidings.journeys.sql import insert_ignore
from tidings.store import cursors
from tidings.store.database import Writer
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_step_stats,
    journey_steps,
    journey_timers,
    journey_waits,
    journeys,
)

__all__ = ["Graph", "JourneyRow", "JourneyStore", "load_graph", "move_off_removed"]

STATUSES = ("draft", "live", "off")


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


def _journey(row: Any) -> JourneyRow:
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
    )


def _step(row: Any) -> Step:
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


def _children_json(step: Step) -> list[dict[str, Any]]:
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
        step = _step(srow)
        by_id[step.id] = step
        if srow.removed_at is None:
            steps[step.uuid] = step
    journey = _journey(row)
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
        if target is None:
            conn.execute(
                sa.update(journey_entrances)
                .where(journey_entrances.c.id == entrance_id)
                .values(state="done", ended_at=now, updated_at=now)
            )
            conn.execute(
                sa.update(journey_path)
                .where(
                    journey_path.c.entrance_id == entrance_id,
                    journey_path.c.step_id == step_id,
                )
                .values(completed_at=now, outcome="step_removed")
            )
        else:
            conn.execute(
                sa.update(journey_path)
                .where(
                    journey_path.c.entrance_id == entrance_id,
                    journey_path.c.step_id == step_id,
                )
                .values(completed_at=now, outcome="step_removed")
            )
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


def _cursor(kind: str, value: int) -> str:
    return cursors.encode(kind, value)


class JourneyStore:
    def __init__(self, writer: Writer, reader: Engine) -> None:
        self.writer = writer
        self.reader = reader
        # Told after each change of a journey or its graph (the engine's cache).
        self.changed: list[Callable[[int], None]] = []

    def _notify(self, journey_id: int) -> None:
        for hook in self.changed:
            hook(journey_id)

    @staticmethod
    def _bump(conn: Connection, journey_id: int, now: int, **values: Any) -> None:
        current = conn.execute(
            sa.select(journeys.c.updated_at).where(journeys.c.id == journey_id)
        ).scalar_one()
        conn.execute(
            sa.update(journeys)
            .where(journeys.c.id == journey_id)
            .values(updated_at=max(now, current + 1), **values)
        )

    def create(
        self,
        project_id: int,
        *,
        name: str,
        description: str | None,
        tags: list[str],
        settings: dict[str, Any],
        now: int,
    ) -> JourneyRow:
        with self.writer.begin() as conn:
            new_id = conn.execute(
                sa.insert(journeys)
                .values(
                    project_id=project_id,
                    name=name,
                    description=description,
                    tags=tags,
                    status="draft",
                    archived=False,
                    settings=settings,
                    created_at=now,
                    updated_at=now,
                )
                .returning(journeys.c.id)
            ).scalar_one()
            row = conn.execute(sa.select(journeys).where(journeys.c.id == new_id)).one()
        return _journey(row)

    def get(self, project_id: int, journey_id: int) -> JourneyRow | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(journeys).where(
                    journeys.c.id == journey_id,
                    journeys.c.project_id == project_id,
                    journeys.c.deleted_at.is_(None),
                )
            ).first()
        return None if row is None else _journey(row)

    def page(
        self, project_id: int, *, limit: int, cursor: str | None
    ) -> tuple[list[JourneyRow], str | None, str | None]:
        """Newest first; the cursors are opaque (the id to continue below or above)."""
        query = sa.select(journeys).where(
            journeys.c.project_id == project_id, journeys.c.deleted_at.is_(None)
        )
        before: int | None = None
        after: int | None = None
        if cursor:  # store.cursors: a forged or stale-format cursor is a 400
            kind, value = cursors.decode(cursor, tuple[Literal["a", "b"], int])
            if kind == "b":
                before = value
            else:
                after = value
        if after is not None:
            query = query.where(journeys.c.id > after).order_by(journeys.c.id.asc())
        else:
            if before is not None:
                query = query.where(journeys.c.id < before)
            query = query.order_by(journeys.c.id.desc())
        with self.reader.connect() as conn:
            rows = [_journey(r) for r in conn.execute(query.limit(limit + 1))]
        more = len(rows) > limit
        rows = rows[:limit]
        if after is not None:
            rows.reverse()
        next_cursor = _cursor("b", rows[-1].id) if rows and (more or after is not None) else None
        prev_cursor = (
            _cursor("a", rows[0].id)
            if rows and (before is not None or (after is not None and more))
            else None
        )
        return rows, next_cursor, prev_cursor

    def update(
        self,
        project_id: int,
        journey_id: int,
        *,
        now: int,
        values: Mapping[str, Any],
        status: str | None = None,
        archived: bool | None = None,
    ) -> JourneyRow:
        """Change fields; ``status`` ``live`` publishes (the graph must pass
        ``publish_errors``), ``off`` pauses, ``live`` again resumes."""
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.select(journeys).where(
                    journeys.c.id == journey_id,
                    journeys.c.project_id == project_id,
                    journeys.c.deleted_at.is_(None),
                )
            ).first()
            if row is None:
                raise NotFound(f"No journey with id {journey_id}.", param="id")
            changes = dict(values)
            if archived is not None:
                changes["archived"] = archived
                if archived and (status or row.status) == "live":
                    status = "off"
            if status is not None and status != row.status:
                if status == "draft":
                    raise Conflict(
                        "A journey that was published cannot go back to draft; turn it off.",
                        param="status",
                    )
                if status == "live":
                    if archived if archived is not None else row.archived:
                        raise Conflict("An archived journey cannot go live.", param="status")
                    graph = load_graph(conn, journey_id)
                    assert graph is not None
                    errors = publish_errors(graph.steps)
                    if errors:
                        raise ValidationFailed(
                            f"The journey cannot go live: {errors[0].param}: {errors[0].message}",
                            param=errors[0].param,
                            errors=errors,
                        )
                    if row.published_at is None:
                        changes["published_at"] = now
                changes["status"] = status
            self._bump(conn, journey_id, now, **changes)
            row = conn.execute(sa.select(journeys).where(journeys.c.id == journey_id)).one()
        self._notify(journey_id)
        return _journey(row)

    def delete(self, project_id: int, journey_id: int, *, now: int) -> bool:
        """Soft-deletes the journey: it stops, its timers and waits go; paths stay."""
        with self.writer.begin() as conn:
            done = conn.execute(
                sa.update(journeys)
                .where(
                    journeys.c.id == journey_id,
                    journeys.c.project_id == project_id,
                    journeys.c.deleted_at.is_(None),
                )
                .values(deleted_at=now, status="off", updated_at=now)
            ).rowcount
            if done:
                conn.execute(
                    sa.delete(journey_timers).where(journey_timers.c.journey_id == journey_id)
                )
                ids = sa.select(journey_entrances.c.id).where(
                    journey_entrances.c.journey_id == journey_id
                )
                conn.execute(sa.delete(journey_waits).where(journey_waits.c.entrance_id.in_(ids)))
        self._notify(journey_id)
        return bool(done)

    def steps(self, journey_id: int) -> dict[str, Step]:
        with self.reader.connect() as conn:
            graph = load_graph(conn, journey_id)
        return {} if graph is None else graph.steps

    def put_steps(
        self, project_id: int, journey_id: int, steps: Mapping[str, Step], *, now: int
    ) -> dict[str, Step]:
        """Replace the graph: steps are matched by uuid (kept ids), new ones inserted,
        missing ones marked removed. A live journey's new graph must be publishable, and
        entrances on removed steps move by ``move_off_removed``."""
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.select(journeys.c.status, journeys.c.project_id).where(
                    journeys.c.id == journey_id, journeys.c.deleted_at.is_(None)
                )
            ).first()
            if row is None or row.project_id != project_id:
                raise NotFound(f"No journey with id {journey_id}.", param="id")
            if row.status == "live":
                errors = publish_errors(steps)
                if errors:
                    raise ValidationFailed(
                        f"A live journey's graph must stay valid: {errors[0].param}: "
                        f"{errors[0].message}",
                        param=errors[0].param,
                        errors=errors,
                    )
            existing = {
                r.uuid: r
                for r in conn.execute(
                    sa.select(journey_steps).where(journey_steps.c.journey_id == journey_id)
                )
            }
            for uuid, step in steps.items():
                values = {
                    "type": step.type,
                    "name": step.name,
                    "data": dict(step.data),
                    "data_key": step.data_key,
                    "x": step.x,
                    "y": step.y,
                    "children": _children_json(step),
                    "updated_at": now,
                    "removed_at": None,
                }
                if uuid in existing:
                    conn.execute(
                        sa.update(journey_steps)
                        .where(journey_steps.c.id == existing[uuid].id)
                        .values(**values)
                    )
                else:
                    conn.execute(
                        sa.insert(journey_steps).values(
                            journey_id=journey_id, uuid=uuid, created_at=now, **values
                        )
                    )
            gone = [r.id for u, r in existing.items() if u not in steps and r.removed_at is None]
            if gone:
                conn.execute(
                    sa.update(journey_steps)
                    .where(journey_steps.c.id.in_(gone))
                    .values(removed_at=now, updated_at=now)
                )
            self._bump(conn, journey_id, now)
            graph = load_graph(conn, journey_id)
            assert graph is not None
            if gone:
                move_off_removed(conn, graph, now)
        self._notify(journey_id)
        return graph.steps

    def stats(self, journey_id: int) -> dict[str, dict[str, int]]:
        with self.reader.connect() as conn:
            ids = {
                r.id: r.uuid
                for r in conn.execute(
                    sa.select(journey_steps.c.id, journey_steps.c.uuid).where(
                        journey_steps.c.journey_id == journey_id,
                        journey_steps.c.removed_at.is_(None),
                    )
                )
            }
            out = {
                u: {"entered": 0, "completed": 0, "waiting": 0, "failed": 0} for u in ids.values()
            }
            st = journey_step_stats
            for r in conn.execute(
                sa.select(
                    st.c.step_id,
                    sa.func.sum(st.c.entered).label("entered"),
                    sa.func.sum(st.c.completed).label("completed"),
                    sa.func.sum(st.c.failed).label("failed"),
                )
                .where(st.c.journey_id == journey_id)
                .group_by(st.c.step_id)
            ):
                if r.step_id in ids:
                    out[ids[r.step_id]].update(
                        entered=int(r.entered), completed=int(r.completed), failed=int(r.failed)
                    )
            for step_id, count in conn.execute(
                sa.select(journey_entrances.c.step_id, sa.func.count())
                .where(
                    journey_entrances.c.journey_id == journey_id,
                    journey_entrances.c.state.in_(("running", "waiting")),
                )
                .group_by(journey_entrances.c.step_id)
            ):
                if step_id in ids:
                    out[ids[step_id]]["waiting"] = int(count)
        return out

    def goals(self, journey_id: int) -> dict[str, Any]:
        """Entrances and those that reached the goal, in all and per experiment branch
        (the child an entrance's experiment sent it to; holdout entrances apart)."""
        e = journey_entrances
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(
                    e.c.branch,
                    e.c.holdout,
                    sa.func.count(),
                    sa.func.count(e.c.goal_at),
                )
                .where(e.c.journey_id == journey_id)
                .group_by(e.c.branch, e.c.holdout)
            ).all()
        total = reached = 0
        branches: dict[str, dict[str, int]] = {}
        holdout = {"entrances": 0, "reached": 0}
        for branch, held, count, hit in rows:
            total += int(count)
            reached += int(hit)
            if held:
                holdout["entrances"] += int(count)
                holdout["reached"] += int(hit)
            if branch is not None:
                slot = branches.setdefault(branch, {"entrances": 0, "reached": 0})
                slot["entrances"] += int(count)
                slot["reached"] += int(hit)
        return {"entrances": total, "reached": reached, "branches": branches, "holdout": holdout}

    def user_entrances(self, journey_id: int, profile_id: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            steps = {
                r.id: r
                for r in conn.execute(
                    sa.select(journey_steps).where(journey_steps.c.journey_id == journey_id)
                )
            }
            entrances = conn.execute(
                sa.select(journey_entrances)
                .where(
                    journey_entrances.c.journey_id == journey_id,
                    journey_entrances.c.profile_id == profile_id,
                )
                .order_by(journey_entrances.c.id)
            ).all()
            paths: dict[int, list[Any]] = {e.id: [] for e in entrances}
            if entrances:
                for p in conn.execute(
                    sa.select(journey_path)
                    .where(journey_path.c.entrance_id.in_(list(paths)))
                    .order_by(journey_path.c.id)
                ):
                    paths[p.entrance_id].append(p)
        out = []
        for e in entrances:
            entrance_step = steps.get(e.entrance_step_id)
            out.append(
                {
                    "id": e.id,
                    "entrance_id": e.entrance_step_id,
                    "entrance_uuid": entrance_step.uuid if entrance_step else None,
                    "entrance_key": e.entrance_key or None,
                    "state": e.state,
                    "holdout": bool(e.holdout),
                    "branch": e.branch,
                    "created_at": e.created_at,
                    "ended_at": e.ended_at,
                    "goal_reached_at": e.goal_at,
                    "path": [
                        {
                            "step_id": p.step_id,
                            "step_uuid": steps[p.step_id].uuid if p.step_id in steps else None,
                            "type": steps[p.step_id].type if p.step_id in steps else None,
                            "entered_at": p.entered_at,
                            "completed_at": p.completed_at,
                            "outcome": p.outcome,
                        }
                        for p in paths[e.id]
                    ],
                }
            )
        return out
