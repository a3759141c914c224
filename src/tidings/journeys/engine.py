"""The journey engine: entering, running steps, waits, timers, merges.

Who calls it, and in which transaction:

* ``JourneyHook.apply`` (a ``BatchHook``) runs inside the ingest batch's write transaction:
  events of the batch resolve waits, enter journeys and reach goals; merges re-point
  entrances. A crash or a stale batch rolls all of it back with the batch, and the batch's
  replay does it again: entering is exactly-once with the event.
* ``JourneyEngine.run_due`` claims due timers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
  SQLite has one writer at a time) and applies them **in the transaction that deletes
  them**: a worker that dies holding a claim rolls back, its row locks go, and another
  worker (or the same one after a restart) takes the timer again.
* ``JourneyEngine.trigger`` (the API) enters one user in its own transaction.

Each step's effects (the outbox row of a send through ``Sends.enqueue``, the events it
emits into ``journey_outbox``) and its completion (the path row, the entrance's move)
commit together, so a crash never repeats a step's send; the send's reference is
``journey:<entrance id>:<step id>``, unique in messaging's outbox besides.

Lock order, where PostgreSQL transactions meet on one entrance (a wait's event in a batch,
its timeout in a worker): the timer row first, then the wait row, then the entrance. Who
deletes the wait row resolves the wait; the other finds it gone and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.ingest import LogEntry, partition_of
from tidings.domain.journeys import lookup_path
from tidings.journeys.runner import Clock, Entering
from tidings.journeys.sql import skip_locked
from tidings.journeys.state import Tx, key_text
from tidings.journeys.timers import TimerRunner
from tidings.store.tables import identities
from tidings.store.tables_journeys import (
    journey_outbox,
    journeys,
)

__all__ = ["Clock", "Entering", "JourneyEngine"]

logger = logging.getLogger(__name__)


class JourneyEngine(TimerRunner):
    """The step runner and its timers (``timers.py``), with the outbox drain and the
    API's trigger."""

    # -- the outbox of emitted events and trait updates ------------------------------------

    def drain_outbox(self, limit: int = 500) -> int:
        """Append emitted items to the ingest log, then delete them (a crash between the
        two appends them again: their message ids make the second append a no-op)."""
        if self.append is None:
            return 0
        with self.writer.begin() as conn:
            rows = conn.execute(
                skip_locked(
                    conn, sa.select(journey_outbox).order_by(journey_outbox.c.id).limit(limit)
                )
            ).all()
            if not rows:
                return 0
            keys = self._identity_keys(conn, rows)
            entries = []
            for r in rows:
                payload = dict(r.payload)
                profile_id = payload.pop("profile_id", None)
                if not payload.get("external_id"):
                    anonymous = keys.get(profile_id or "")
                    if anonymous is None:
                        continue  # an erased or unknown profile: nothing to say about it
                    payload["anonymous_id"] = anonymous
                identity = payload.get("external_id") or payload.get("anonymous_id") or ""
                entries.append(
                    LogEntry(
                        project_id=r.project_id,
                        kind=r.kind,
                        partition=partition_of(r.project_id, identity, self.partitions),
                        payload=payload,
                        accepted_at=r.created_at,
                    )
                )
            if entries:
                self.append(entries)
            conn.execute(
                sa.delete(journey_outbox).where(journey_outbox.c.id.in_([r.id for r in rows]))
            )
        return len(rows)

    @staticmethod
    def _identity_keys(conn: Connection, rows: Sequence[Any]) -> dict[str, str]:
        wanted = {
            r.payload.get("profile_id")
            for r in rows
            if not r.payload.get("external_id") and r.payload.get("profile_id")
        }
        if not wanted:
            return {}
        return {
            profile_id: value
            for profile_id, value in conn.execute(
                sa.select(identities.c.profile_id, identities.c.value).where(
                    identities.c.kind == "anonymous", identities.c.profile_id.in_(wanted)
                )
            )
        }

    # -- the API's trigger ---------------------------------------------------------------------

    def trigger(
        self,
        project_id: int,
        journey_id: int,
        profile_id: str,
        *,
        entrance_uuid: str | None,
        event: Mapping[str, Any] | None,
        unique: str | None,
    ) -> int | None:
        from tidings.domain.errors import Conflict, NotFound

        now = self.clock()
        with self.writer.begin() as conn:
            graph = self.graphs.get(conn, journey_id)
            if graph is None or graph.journey.project_id != project_id:
                found = conn.execute(
                    sa.select(journeys.c.status).where(
                        journeys.c.id == journey_id,
                        journeys.c.project_id == project_id,
                        journeys.c.deleted_at.is_(None),
                    )
                ).first()
                if found is None:
                    raise NotFound(f"No journey with id {journey_id}.", param="id")
                raise Conflict(f"Journey {journey_id} is not live.", param="id")
            if graph.journey.status != "live":
                raise Conflict(f"Journey {journey_id} is not live.", param="id")
            entrances = graph.entrances()
            if entrance_uuid is not None:
                entrances = [
                    e for e in entrances if e.uuid == entrance_uuid or str(e.id) == entrance_uuid
                ]
                if not entrances:
                    raise NotFound(
                        f"No entrance {entrance_uuid} in this journey.", param="entrance_id"
                    )
            else:
                none = [e for e in entrances if e.data.get("trigger") == "none"]
                entrances = none or entrances
            profile = self.load_profiles(conn, [profile_id]).get(profile_id)
            if profile is None:
                raise NotFound("The user is not there.", param="user.external_id")
            tx = Tx(now)
            body = {"name": "journey_trigger", "data": dict(event or {}), "created_at": now}
            key = ""
            path = entrances[0].data.get("key")
            if path:
                key = key_text(lookup_path(body, str(path)))
            entrance_id = self.enter(
                conn, graph, entrances[0], profile, tx, event=body, key=key, unique=unique
            )
            tx.flush(conn)
        return entrance_id
