"""All SQL of journeys' definitions: create, read, page, change, publish, delete, and put
a journey's step graph. The graph's shape is in ``graphs.py``, the reports in
``reports.py``; the engine's own SQL (entrances, timers, waits) is in ``runner.py`` and
``timers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import Conflict, NotFound, ValidationFailed
from tidings.domain.journeys import (
    Step,
    publish_errors,
)
from tidings.journeys import reports
from tidings.journeys.graphs import (
    Graph,
    JourneyRow,
    children_json,
    journey_of,
    load_graph,
    move_off_removed,
    recheck_waits,
    redecide_delays,
)
from tidings.store import cursors
from tidings.store.database import Writer
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_ready,
    journey_steps,
    journey_timers,
    journey_waits,
    journeys,
)

__all__ = ["Graph", "JourneyRow", "JourneyStore", "load_graph", "move_off_removed"]

STATUSES = ("draft", "live", "off")


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
        return journey_of(row)

    def get(self, project_id: int, journey_id: int) -> JourneyRow | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(journeys).where(
                    journeys.c.id == journey_id,
                    journeys.c.project_id == project_id,
                    journeys.c.deleted_at.is_(None),
                )
            ).first()
        return None if row is None else journey_of(row)

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
            rows = [journey_of(r) for r in conn.execute(query.limit(limit + 1))]
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
            resumed = False
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
                    changes["live_at"] = now
                    if row.status == "off":
                        resumed = True
                changes["status"] = status
            self._bump(conn, journey_id, now, **changes)
            if resumed:
                recheck_waits(conn, journey_id, now)
            row = conn.execute(sa.select(journeys).where(journeys.c.id == journey_id)).one()
        self._notify(journey_id)
        return journey_of(row)

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
                for table in (journey_timers, journey_ready):
                    conn.execute(sa.delete(table).where(table.c.journey_id == journey_id))
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
            changed_delays: list[int] = []
            for uuid, step in steps.items():
                values = {
                    "type": step.type,
                    "name": step.name,
                    "data": dict(step.data),
                    "data_key": step.data_key,
                    "x": step.x,
                    "y": step.y,
                    "children": children_json(step),
                    "updated_at": now,
                    "removed_at": None,
                }
                if uuid in existing:
                    before = existing[uuid]
                    if (
                        before.type == "delay"
                        and before.removed_at is None
                        and (step.type != "delay" or dict(before.data or {}) != dict(step.data))
                    ):
                        changed_delays.append(before.id)
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
            if changed_delays:
                redecide_delays(conn, changed_delays, now)
            self._bump(conn, journey_id, now)
            graph = load_graph(conn, journey_id)
            assert graph is not None
            if gone:
                move_off_removed(conn, graph, now)
        self._notify(journey_id)
        return graph.steps

    def stats(self, journey_id: int) -> dict[str, dict[str, int]]:
        return reports.step_stats(self.reader, journey_id)

    def goals(self, journey_id: int) -> dict[str, Any]:
        """Entrances and those that reached the goal, in all and per experiment branch."""
        return reports.goals(self.reader, journey_id)

    def user_entrances(self, journey_id: int, profile_id: str) -> list[dict[str, Any]]:
        return reports.user_entrances(self.reader, journey_id, profile_id)
