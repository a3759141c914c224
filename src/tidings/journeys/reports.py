"""What journeys report: per-step counts, the conversion goal per branch, one user's path."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_ready,
    journey_step_stats,
    journey_steps,
)

__all__ = ["goals", "step_stats", "user_entrances"]


def step_stats(reader: Engine, journey_id: int) -> dict[str, dict[str, int]]:
    with reader.connect() as conn:
        rows = conn.execute(
            sa.select(journey_steps.c.id, journey_steps.c.uuid, journey_steps.c.children).where(
                journey_steps.c.journey_id == journey_id,
                journey_steps.c.removed_at.is_(None),
            )
        ).all()
        ids = {r.id: r.uuid for r in rows}
        first_child = {r.id: _first_child(r.children) for r in rows}
        out = {u: {"entered": 0, "completed": 0, "waiting": 0, "failed": 0} for u in ids.values()}
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
        # Each (step, state) pair seeks its own range of ``ix_journey_entrances_step``:
        # the cost is the entrances still in the journey, not every entrance it ever had.
        for step_id, count in conn.execute(
            sa.select(journey_entrances.c.step_id, sa.func.count())
            .where(
                journey_entrances.c.journey_id == journey_id,
                journey_entrances.c.step_id.in_(sorted(ids)),
                journey_entrances.c.state.in_(("running", "waiting")),
            )
            .group_by(journey_entrances.c.step_id)
        ):
            if step_id in ids:
                out[ids[step_id]]["waiting"] = int(count)
        # Fired delays whose next step has not run yet: already at the next step (the
        # firing counted them there), though their entrance row still names the delay.
        ready, entrance = journey_ready, journey_entrances
        for step_id, count in conn.execute(
            sa.select(ready.c.step_id, sa.func.count())
            .select_from(ready.join(entrance, entrance.c.id == ready.c.entrance_id))
            .where(
                ready.c.journey_id == journey_id,
                entrance.c.step_id == ready.c.step_id,  # still at the delay
                entrance.c.state.in_(("running", "waiting")),
            )
            .group_by(ready.c.step_id)
        ):
            following = first_child.get(step_id)
            if step_id in ids and following in out:
                out[ids[step_id]]["waiting"] = max(0, out[ids[step_id]]["waiting"] - int(count))
                out[following]["waiting"] += int(count)
    return out


def _first_child(children: Any) -> str | None:
    for child in children or []:
        if isinstance(child, dict) and child.get("external_id"):
            return str(child["external_id"])
    return None


def goals(reader: Engine, journey_id: int) -> dict[str, Any]:
    """Entrances and those that reached the goal, in all and per experiment branch
    (the child an entrance's experiment sent it to; holdout entrances apart)."""
    e = journey_entrances
    with reader.connect() as conn:
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


def user_entrances(reader: Engine, journey_id: int, profile_id: str) -> list[dict[str, Any]]:
    with reader.connect() as conn:
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
        paths: dict[int, list[dict[str, Any]]] = {e.id: [] for e in entrances}
        fired: dict[int, Any] = {}
        if entrances:
            for p in conn.execute(
                sa.select(journey_path)
                .where(journey_path.c.entrance_id.in_(list(paths)))
                .order_by(journey_path.c.id)
            ):
                paths[p.entrance_id].append(
                    {
                        "step_id": p.step_id,
                        "entered_at": p.entered_at,
                        "completed_at": p.completed_at,
                        "outcome": p.outcome,
                    }
                )
            r = journey_ready
            fired = {
                x.entrance_id: x
                for x in conn.execute(
                    sa.select(r).where(
                        r.c.journey_id == journey_id, r.c.entrance_id.in_(list(paths))
                    )
                )
            }
    by_uuid = {s.uuid: s for s in steps.values() if s.removed_at is None}
    active = {e.id for e in entrances if e.state in ("running", "waiting")}
    for entrance_id, x in fired.items():
        # A fired delay whose next step has not run yet reads as it will be written
        # then: the delay completed, the next step entered, both at the firing.
        path = paths[entrance_id]
        if (
            entrance_id not in active
            or not path
            or path[-1]["step_id"] != x.step_id
            or path[-1]["completed_at"]
        ):
            continue  # it left the delay meanwhile: the ready queue will drop the row
        path[-1].update(completed_at=x.fired_at, outcome="completed")
        following = by_uuid.get(_first_child(steps[x.step_id].children) or "")
        if following is not None:
            path.append(
                {
                    "step_id": following.id,
                    "entered_at": x.fired_at,
                    "completed_at": None,
                    "outcome": None,
                }
            )
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
                        "step_id": p["step_id"],
                        "step_uuid": steps[p["step_id"]].uuid if p["step_id"] in steps else None,
                        "type": steps[p["step_id"]].type if p["step_id"] in steps else None,
                        "entered_at": p["entered_at"],
                        "completed_at": p["completed_at"],
                        "outcome": p["outcome"],
                    }
                    for p in paths[e.id]
                ],
            }
        )
    return out
