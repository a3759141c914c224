"""The journeys' ``BatchHook``: in the ingest batch's write transaction, each new event
resolves the waits it matches, enters the journeys it triggers and reaches goals; merges
de-duplicate the two users' entrances. See ``engine.py`` for the lock order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.journeys import Step, WaitFor, event_passes, lookup_path, wait_matches
from tidings.domain.rules import EventFact
from tidings.journeys.engine import JourneyEngine
from tidings.journeys.graphs import Graph
from tidings.journeys.state import ACTIVE, Profile, Tx, key_text, profile_of
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_path,
    journey_ready,
    journey_timers,
    journey_waits,
)

__all__ = ["JourneyHook"]


class JourneyHook:
    """The ``BatchHook`` of journeys: in the batch's transaction, each new event resolves
    the waits it matches, enters the journeys it triggers, and reaches goals; merges
    de-duplicate the two users' entrances."""

    def __init__(self, engine: JourneyEngine) -> None:
        self.engine = engine

    def apply(self, conn: Connection, facts: Any, now: int) -> None:
        engine = self.engine
        live = engine.graphs.live(conn)
        if facts.merges:
            self._merges(conn, facts.merges, now)
        if facts.erased:
            self._erase(conn, facts.erased)
        if not facts.events:
            return
        by_profile: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in facts.events:
            by_profile[e["profile_id"]].append(e)
        tx = Tx(now)
        people = {p.id: profile_of(p) for p in facts.profiles}
        missing = set(by_profile) - set(people)
        if missing:
            people.update(engine.load_profiles(conn, missing))
        self._waits(conn, by_profile, people, tx)
        if live:
            self._entrances(conn, live, facts.events, people, tx)
            self._goals(conn, live, facts.events, people, tx)
        tx.flush(conn)

    def _waits(
        self,
        conn: Connection,
        by_profile: Mapping[str, list[dict[str, Any]]],
        people: Mapping[str, Profile],
        tx: Tx,
    ) -> None:
        engine = self.engine
        tx.write_pending(conn)
        names = {e["name"] for events in by_profile.values() for e in events}
        ids = sorted(by_profile)
        waits: list[Any] = []
        for i in range(0, len(ids), 500):
            waits.extend(
                conn.execute(
                    sa.select(journey_waits).where(
                        journey_waits.c.profile_id.in_(ids[i : i + 500]),
                        journey_waits.c.event_name.in_(names),
                    )
                ).all()
            )
        if not waits:
            return
        states = engine.states(conn, [w.entrance_id for w in waits])
        for wait in sorted(waits, key=lambda w: w.entrance_id):
            state = states.get(wait.entrance_id)
            profile = people.get(wait.profile_id)
            if state is None or profile is None or state.state != "waiting":
                continue
            graph = engine.graphs.cached(state.journey_id)
            if graph is None or graph.journey.status != "live":
                continue  # an off journey does not advance; its waits stay
            step = graph.by_id.get(wait.step_id)
            if step is None:
                continue
            spec = WaitFor(
                0,
                event_name=wait.event_name,
                rule=step.data.get("rule"),
                match_path=step.data.get("match"),
            )
            facts = profile.facts()
            hit = None
            for e in by_profile[wait.profile_id]:
                fact = EventFact(e["name"], e.get("data") or {}, e["created_at"])
                if e["created_at"] >= state.arrived_at - 1 and wait_matches(
                    spec, state.event, facts, fact, tx.now
                ):
                    hit = e
                    break
            if hit is None:
                continue
            # Timer first, then the wait (the lock order of the module docstring).
            conn.execute(
                sa.delete(journey_timers).where(
                    journey_timers.c.entrance_id == state.id, journey_timers.c.kind == "timeout"
                )
            )
            gone = conn.execute(
                sa.delete(journey_waits).where(journey_waits.c.entrance_id == state.id)
            ).rowcount
            if not gone:
                continue
            engine.advance(conn, graph, state, profile, tx, resumed="yes")

    def _entrances(
        self,
        conn: Connection,
        live: list[Graph],
        events: list[dict[str, Any]],
        people: Mapping[str, Profile],
        tx: Tx,
    ) -> None:
        wanted: dict[tuple[int, str], list[tuple[Graph, Step]]] = defaultdict(list)
        for graph in live:
            for step in graph.entrances():
                if step.data.get("trigger") == "event" and step.data.get("event_name"):
                    wanted[(graph.journey.project_id, str(step.data["event_name"]))].append(
                        (graph, step)
                    )
        if not wanted:
            return
        batch: dict[tuple[int, str], int] = {}
        candidates = []
        for e in events:
            targets = wanted.get((e["project_id"], e["name"]))
            profile = people.get(e["profile_id"])
            if not targets or profile is None:
                continue
            body = {"name": e["name"], "data": e.get("data") or {}, "created_at": e["created_at"]}
            fact = EventFact(e["name"], body["data"], e["created_at"])
            for graph, step in targets:
                if not event_passes(step.data.get("rule"), profile.facts(), fact, tx.now):
                    continue
                key = ""
                if step.data.get("key"):
                    key = key_text(lookup_path(body, str(step.data["key"])))
                    if not key:
                        continue  # keyed entrances need the key
                found = self.engine.candidate(
                    conn,
                    graph,
                    step,
                    profile,
                    tx,
                    event=body,
                    key=key,
                    unique=e["message_id"],
                    batch=batch,
                )
                if found is not None:
                    candidates.append(found)
        # One statement enters them all; the unique constraint drops duplicates.
        for entering, entrance_id in self.engine.insert_entrances(conn, candidates):
            self.engine.start(conn, entering, entrance_id, tx)

    def _goals(
        self,
        conn: Connection,
        live: list[Graph],
        events: list[dict[str, Any]],
        people: Mapping[str, Profile],
        tx: Tx,
    ) -> None:
        goals = [(g, g.settings.goal) for g in live if g.settings.goal]
        if not goals:
            return
        for e in events:
            profile = people.get(e["profile_id"])
            if profile is None:
                continue
            fact = EventFact(e["name"], e.get("data") or {}, e["created_at"])
            for graph, goal in goals:
                assert goal is not None
                if graph.journey.project_id != e["project_id"] or goal["event_name"] != e["name"]:
                    continue
                if not event_passes(goal.get("rule"), profile.facts(), fact, tx.now):
                    continue
                rows = conn.execute(
                    sa.select(journey_entrances.c.id).where(
                        journey_entrances.c.journey_id == graph.journey.id,
                        journey_entrances.c.profile_id == profile.id,
                        journey_entrances.c.goal_at.is_(None),
                        journey_entrances.c.created_at <= e["created_at"],
                        journey_entrances.c.created_at >= e["created_at"] - int(goal["within"]),
                    )
                ).all()
                for (entrance_id,) in rows:
                    done = conn.execute(
                        sa.update(journey_entrances)
                        .where(
                            journey_entrances.c.id == entrance_id,
                            journey_entrances.c.goal_at.is_(None),
                        )
                        .values(goal_at=e["created_at"])
                    ).rowcount
                    if done:
                        self.engine.fact(
                            tx, profile, "journey_goal_reached", graph.journey.id, entrance_id, 0
                        )

    def _merges(self, conn: Connection, merges: list[tuple[int, str, str]], now: int) -> None:
        """The absorbed user's entrances become the survivor's; one that the survivor
        already has (same journey, entrance, key and occurrence) ends as ``merged``, its
        waits and timers removed, so the person goes through each once."""
        e = journey_entrances
        for project_id, absorbed, survivor in merges:
            theirs = conn.execute(
                sa.select(e).where(e.c.project_id == project_id, e.c.profile_id == absorbed)
            ).all()
            for row in theirs:
                clash = conn.execute(
                    sa.select(e.c.id).where(
                        e.c.journey_id == row.journey_id,
                        e.c.entrance_step_id == row.entrance_step_id,
                        e.c.profile_id == survivor,
                        e.c.entrance_key == row.entrance_key,
                        e.c.occurrence == row.occurrence,
                    )
                ).first()
                values: dict[str, Any] = {"profile_id": survivor, "updated_at": now}
                if clash is not None:
                    conn.execute(
                        sa.delete(journey_timers).where(journey_timers.c.entrance_id == row.id)
                    )
                    conn.execute(
                        sa.delete(journey_waits).where(journey_waits.c.entrance_id == row.id)
                    )
                    values["occurrence"] = f"merged:{row.id}"[:64]
                    if row.state in ACTIVE:
                        values.update(state="merged", ended_at=now)
                conn.execute(sa.update(e).where(e.c.id == row.id).values(**values))
            conn.execute(
                sa.update(journey_waits)
                .where(
                    journey_waits.c.project_id == project_id, journey_waits.c.profile_id == absorbed
                )
                .values(profile_id=survivor)
            )

    @staticmethod
    def _erase(conn: Connection, erased: list[tuple[int, str]]) -> None:
        """An erased user leaves no trace in journeys: entrances, paths, timers, waits."""
        e = journey_entrances
        for project_id, profile_id in erased:
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(e.c.id).where(
                        e.c.project_id == project_id, e.c.profile_id == profile_id
                    )
                )
            ]
            if not ids:
                continue
            for table in (journey_timers, journey_ready, journey_waits, journey_path):
                conn.execute(sa.delete(table).where(table.c.entrance_id.in_(ids)))
            conn.execute(sa.delete(e).where(e.c.id.in_(ids)))
