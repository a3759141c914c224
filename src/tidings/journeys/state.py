"""The engine's working values: a profile as steps read it, an entrance's state, the
per-transaction accumulator of counters and emitted items, and the graph cache."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tidings.domain.rules import ProfileFacts
from tidings.journeys.graphs import Graph, load_graph
from tidings.journeys.sql import add_counts, run_many
from tidings.store.tables_journeys import (
    journey_outbox,
    journey_step_stats,
    journeys,
)

__all__ = [
    "ACTIVE",
    "EntranceState",
    "Graphs",
    "Profile",
    "Tx",
    "json_text",
    "key_text",
    "profile_of",
    "stats_shard",
]

ACTIVE = ("running", "waiting")
_TIMER_UPSERT = (
    " ON CONFLICT (entrance_id, kind) DO UPDATE SET project_id = excluded.project_id,"
    " journey_id = excluded.journey_id, step_id = excluded.step_id, due_at = excluded.due_at"
)
STATS_SHARDS = 16


def stats_shard() -> int:
    """The counter shard of this process and thread (see ``journey_step_stats``)."""
    return hash((os.getpid(), threading.get_ident())) % STATS_SHARDS


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    project_id: int
    external_id: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    data: Mapping[str, Any]
    created_at: int

    def facts(self) -> ProfileFacts:
        return ProfileFacts(
            id=self.id,
            external_id=self.external_id,
            email=self.email,
            phone=self.phone,
            timezone=self.timezone,
            locale=self.locale,
            data=self.data,
            created_at=self.created_at,
        )


def profile_of(row: Any) -> Profile:
    return Profile(
        id=row.id,
        project_id=row.project_id,
        external_id=row.external_id,
        email=row.email,
        phone=row.phone,
        timezone=row.timezone,
        locale=row.locale,
        data=dict(row.data or {}),
        created_at=row.created_at,
    )


@dataclass(slots=True)
class EntranceState:
    id: int
    project_id: int
    journey_id: int
    entrance_step_id: int
    profile_id: str
    step_id: int
    state: str
    event: dict[str, Any]
    holdout: bool
    branch: str | None
    arrived_at: int  # when it reached ``step_id``
    ended_at: int | None = None


@dataclass
class Tx:
    """What one transaction accumulates and writes at its end: counters, emitted items."""

    now: int
    counts: dict[tuple[int, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0])
    )
    outbox: list[dict[str, Any]] = field(default_factory=list)
    steps_run: int = 0
    # Writes deferred to one statement each (executemany) per transaction: path rows
    # entered, path rows completed, entrances' positions. ``write_pending`` runs them
    # before anything reads what they change.
    path_entered: list[dict[str, Any]] = field(default_factory=list)  # entrance steps
    path_new: list[dict[str, Any]] = field(default_factory=list)
    timers: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    path_done: list[dict[str, Any]] = field(default_factory=list)
    saves: dict[int, dict[str, Any]] = field(default_factory=dict)

    def write_pending(self, conn: Connection) -> None:
        if self.path_entered:
            run_many(
                conn,
                "INSERT INTO journey_path (entrance_id, step_id, entered_at, completed_at,"
                " outcome) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        r["entrance_id"],
                        r["step_id"],
                        r["entered_at"],
                        r["completed_at"],
                        r["outcome"],
                    )
                    for r in self.path_entered
                ],
                pg="INSERT INTO journey_path (entrance_id, step_id, entered_at, completed_at,"
                " outcome) SELECT * FROM unnest(%s::bigint[], %s::int[], %s::bigint[],"
                " %s::bigint[], %s::text[])",
            )
            self.path_entered = []
        if self.timers:
            run_many(
                conn,
                "INSERT INTO journey_timers (project_id, journey_id, entrance_id, step_id, kind,"
                " due_at) VALUES (?, ?, ?, ?, ?, ?)" + _TIMER_UPSERT,
                [
                    (
                        t["project_id"],
                        t["journey_id"],
                        t["entrance_id"],
                        t["step_id"],
                        k,
                        t["due_at"],
                    )
                    for (_, k), t in sorted(self.timers.items())
                ],
                pg="INSERT INTO journey_timers (project_id, journey_id, entrance_id, step_id,"
                " kind, due_at) SELECT * FROM unnest(%s::int[], %s::int[], %s::bigint[],"
                " %s::int[], %s::text[], %s::bigint[])" + _TIMER_UPSERT,
            )
            self.timers = {}
        if self.path_new:
            run_many(
                conn,
                "INSERT INTO journey_path (entrance_id, step_id, entered_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(r["entrance_id"], r["step_id"], r["entered_at"]) for r in self.path_new],
                pg="INSERT INTO journey_path (entrance_id, step_id, entered_at) SELECT * FROM"
                " unnest(%s::bigint[], %s::int[], %s::bigint[]) ON CONFLICT DO NOTHING",
            )
            self.path_new = []
        if self.path_done:
            # The last completion of a (entrance, step) wins (a send's outcome replaces
            # the step's): one row each, so that the set-based update is the same.
            done = {(r["e"], r["s"]): (r["c"], r["o"], r["e"], r["s"]) for r in self.path_done}
            run_many(
                conn,
                "UPDATE journey_path SET completed_at = ?, outcome = ?"
                " WHERE entrance_id = ? AND step_id = ?",
                [done[k] for k in sorted(done)],
                pg="UPDATE journey_path AS p SET completed_at = u.c, outcome = u.o FROM"
                " unnest(%s::bigint[], %s::text[], %s::bigint[], %s::int[]) AS u(c, o, e, s)"
                " WHERE p.entrance_id = u.e AND p.step_id = u.s",
            )
            self.path_done = []
        if self.saves:
            run_many(
                conn,
                "UPDATE journey_entrances SET step_id = ?, state = ?, branch = ?,"
                " updated_at = ?, ended_at = ? WHERE id = ?",
                [
                    (v["step"], v["st"], v["br"], v["at"], v["end"], k)
                    for k, v in sorted(self.saves.items())
                ],
                pg="UPDATE journey_entrances AS e SET step_id = u.step, state = u.st,"
                " branch = u.br, updated_at = u.at, ended_at = u.ended FROM unnest(%s::int[],"
                " %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
                " AS u(step, st, br, at, ended, id) WHERE e.id = u.id",
            )
            self.saves = {}

    def entered(self, journey_id: int, step_id: int) -> None:
        self.counts[(journey_id, step_id)][0] += 1

    def completed(self, journey_id: int, step_id: int) -> None:
        self.counts[(journey_id, step_id)][1] += 1

    def failed(self, journey_id: int, step_id: int) -> None:
        self.counts[(journey_id, step_id)][2] += 1

    def flush(self, conn: Connection) -> None:
        self.write_pending(conn)
        add_counts(
            conn,
            journey_step_stats,
            ("journey_id", "step_id", "shard"),
            [
                {
                    "journey_id": j,
                    "step_id": s,
                    "shard": stats_shard(),
                    "entered": e,
                    "completed": c,
                    "failed": f,
                }
                for (j, s), (e, c, f) in self.counts.items()
            ],
        )
        if self.outbox and conn.dialect.name == "postgresql":
            run_many(
                conn,
                "",
                [
                    (o["project_id"], o["kind"], json_text(o["payload"]), o["created_at"])
                    for o in self.outbox
                ],
                pg="INSERT INTO journey_outbox (project_id, kind, payload, created_at)"
                " SELECT p, k, j::jsonb, c FROM unnest(%s::int[], %s::text[], %s::text[],"
                " %s::bigint[]) AS u(p, k, j, c)",
            )
        elif self.outbox:
            conn.execute(sa.insert(journey_outbox), self.outbox)
        self.counts.clear()
        self.outbox.clear()


class Graphs:
    """Journey graphs, cached until ``journeys`` changes (a count and the newest
    ``updated_at``, read once per use: cheap, and right across processes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: tuple[int, int] | None = None
        self._graphs: dict[int, Graph] = {}
        self._live: list[Graph] = []

    def invalidate(self, _journey_id: int = 0) -> None:
        with self._lock:
            self._version = None

    def refresh(self, conn: Connection) -> None:
        version = tuple(
            conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(journeys.c.updated_at), 0))
            ).one()
        )
        with self._lock:
            if version == self._version:
                return
        graphs: dict[int, Graph] = {}
        for (journey_id,) in conn.execute(
            sa.select(journeys.c.id).where(
                journeys.c.status.in_(("live", "off")), journeys.c.deleted_at.is_(None)
            )
        ):
            graph = load_graph(conn, journey_id)
            if graph is not None:
                graphs[journey_id] = graph
        with self._lock:
            self._graphs = graphs
            self._live = [g for g in graphs.values() if g.journey.status == "live"]
            self._version = (int(version[0]), int(version[1]))

    def get(self, conn: Connection, journey_id: int) -> Graph | None:
        self.refresh(conn)
        return self._graphs.get(journey_id)

    def cached(self, journey_id: int) -> Graph | None:
        """As of the last ``refresh`` (callers refresh once per transaction)."""
        return self._graphs.get(journey_id)

    def live(self, conn: Connection) -> list[Graph]:
        self.refresh(conn)
        return self._live


def json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def key_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json_text(value)
