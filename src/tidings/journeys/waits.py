"""Waits of a journey that was off: what happened meanwhile.

An off journey does not advance: the events and list changes that would end its waits
are not acted on while it is off (the batch hook and the list tick leave its waits
alone). When it is turned back on, each pending wait is looked at again at once (a
``recheck`` timer, see ``graphs.recheck_waits``), and a wait whose timeout comes first
is looked at when it fires: an event or list change since the entrance arrived at the
wait (and, for a timeout, before it) ends the wait on ``yes``, as it would have had the
journey been live. The events are read back from ``events`` (at most ``LOOK`` of the
awaited name), list changes from ``list_changes``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.journeys import Step, WaitFor, wait_matches
from tidings.domain.rules import EventFact
from tidings.journeys.state import EntranceState, Profile
from tidings.store.tables import events, list_changes

__all__ = ["LOOK", "happened_meanwhile"]

LOOK = 1000


def happened_meanwhile(
    conn: Connection,
    step: Step,
    state: EntranceState,
    wait: Any,
    profile: Profile,
    *,
    until: int,
    now: int,
) -> bool:
    """Whether an event or list change between the arrival at the wait and ``until``
    ends ``wait`` (a ``journey_waits`` row of ``state``, at ``step``)."""
    if wait.list_id is not None:
        change = str(step.data.get("change", "entered"))
        return (
            conn.execute(
                sa.select(list_changes.c.id)
                .where(
                    list_changes.c.project_id == state.project_id,
                    list_changes.c.profile_id == profile.id,
                    list_changes.c.list_id == wait.list_id,
                    list_changes.c.change == change,
                    list_changes.c.created_at >= state.arrived_at,
                    list_changes.c.created_at <= until,
                )
                .limit(1)
            ).first()
            is not None
        )
    if wait.event_name is None:
        return False
    spec = WaitFor(
        0,
        event_name=wait.event_name,
        rule=step.data.get("rule"),
        match_path=step.data.get("match"),
    )
    facts = profile.facts()
    for name, data, created_at in conn.execute(
        sa.select(events.c.name, events.c.data, events.c.created_at)
        .where(
            events.c.project_id == state.project_id,
            events.c.profile_id == profile.id,
            events.c.name == wait.event_name,
            events.c.created_at >= state.arrived_at - 1,
            events.c.created_at <= until,
        )
        .order_by(events.c.created_at)
        .limit(LOOK)
    ):
        if wait_matches(spec, state.event, facts, EventFact(name, data or {}, created_at), now):
            return True
    return False
