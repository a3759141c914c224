"""A step's effects: a send through ``Sends.enqueue``, an emitted event or trait update
(into ``journey_outbox``), an exit, a link into another journey."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.journeys import (
    Decision,
    Emit,
    ExitEntrance,
    LinkTo,
    Send,
    Step,
    UpdateTraits,
)
from tidings.domain.sending import SendRequest
from tidings.journeys.advancing import Advancer
from tidings.journeys.graphs import Graph
from tidings.journeys.state import (
    ACTIVE,
    EntranceState,
    Profile,
    Tx,
)
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_timers,
    journey_waits,
)

__all__ = ["EffectsRunner"]


class EffectsRunner(Advancer):
    """The step runner with its effects; entering (``enter``) comes from ``StepRunner``."""

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
        raise NotImplementedError

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
        """Apply the step's effects; True when the entrance ends with it. A send's
        outcome (queued, duplicate, not_running) becomes the step's."""
        ended = False
        outcome = decision.outcome
        for effect in decision.effects:
            if isinstance(effect, Send):
                queued = self.sends.enqueue(
                    conn,
                    SendRequest(
                        project_id=state.project_id,
                        campaign_id=effect.campaign_id,
                        profile_id=profile.id,
                        reference=f"journey:{state.id}:{step.id}",
                        context={
                            "event": dict(state.event.get("data") or {}),
                            "journey": {"id": state.journey_id, "entrance_id": state.id},
                        },
                        journey_id=state.journey_id,
                        step_id=step.id,
                    ),
                    tx.now,
                )
                outcome = str(getattr(queued, "value", queued))
            elif isinstance(effect, Emit):
                self.emit(
                    tx,
                    profile,
                    effect.name,
                    effect.data,
                    message_id=f"journey:{state.id}:{step.id}",
                )
            elif isinstance(effect, UpdateTraits):
                payload: dict[str, Any] = {"data": dict(effect.data), "profile_id": profile.id}
                if profile.external_id:
                    payload["external_id"] = profile.external_id
                tx.outbox.append(
                    {
                        "project_id": profile.project_id,
                        "kind": "user",
                        "payload": payload,
                        "created_at": tx.now,
                    }
                )
            elif isinstance(effect, ExitEntrance):
                ended = True
                if effect.entrance_uuid is not None:
                    target = graph.steps.get(str(effect.entrance_uuid))
                    if target is not None and target.id != state.entrance_step_id:
                        self._exit_others(conn, graph, profile, target.id, tx)
                        ended = False
            elif isinstance(effect, LinkTo):
                ended = True
                other = self.graphs.get(conn, effect.journey_id)
                if other is not None and other.journey.project_id == state.project_id:
                    entrances = other.entrances()
                    if effect.entrance_uuid:
                        entrances = [e for e in entrances if e.uuid == effect.entrance_uuid]
                    if entrances:
                        self.enter(
                            conn,
                            other,
                            entrances[0],
                            profile,
                            tx,
                            event=state.event,
                            unique=f"link:{state.id}:{step.id}",
                        )
        if outcome != decision.outcome:
            self._complete(conn, state, outcome, tx)
        return ended

    def _exit_others(
        self, conn: Connection, graph: Graph, profile: Profile, entrance_step_id: int, tx: Tx
    ) -> None:
        tx.write_pending(conn)
        rows = conn.execute(
            sa.select(journey_entrances.c.id, journey_entrances.c.step_id).where(
                journey_entrances.c.journey_id == graph.journey.id,
                journey_entrances.c.profile_id == profile.id,
                journey_entrances.c.entrance_step_id == entrance_step_id,
                journey_entrances.c.state.in_(ACTIVE),
            )
        ).all()
        for entrance_id, step_id in rows:
            conn.execute(
                sa.delete(journey_timers).where(journey_timers.c.entrance_id == entrance_id)
            )
            conn.execute(sa.delete(journey_waits).where(journey_waits.c.entrance_id == entrance_id))
            conn.execute(
                sa.update(journey_path)
                .where(journey_path.c.entrance_id == entrance_id, journey_path.c.step_id == step_id)
                .values(completed_at=tx.now, outcome="exited")
            )
            conn.execute(
                sa.update(journey_entrances)
                .where(journey_entrances.c.id == entrance_id)
                .values(state="exited", ended_at=tx.now, updated_at=tx.now)
            )
