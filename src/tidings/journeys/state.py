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
from tidings.journeys.sql import add_counts, insert_ignore_many, upsert_many
from tidings.store.tables_journeys import (
    journey_entrances,
    journey_outbox,
    journey_path,
    journey_step_stats,
    journey_timers,
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
            conn.execute(sa.insert(journey_path), self.path_entered)
            self.path_entered = []
        if self.timers:
            rows = [self.timers[k] for k in sorted(self.timers)]
            upsert_many(conn, journey_timers, ("entrance_id", "kind"), rows)
            self.timers = {}
        if self.path_new:
            insert_ignore_many(conn, journey_path, self.path_new)
            self.path_new = []
        if self.path_done:
            p = journey_path
            conn.execute(
                sa.update(p)
                .where(p.c.entrance_id == sa.bindparam("e"), p.c.step_id == sa.bindparam("s"))
                .values(completed_at=sa.bindparam("c"), outcome=sa.bindparam("o")),
                self.path_done,
            )
            self.path_done = []
        if self.saves:
            e = journey_entrances
            conn.execute(
                sa.update(e)
                .where(e.c.id == sa.bindparam("e"))
                .values(
                    step_id=sa.bindparam("step"),
                    state=sa.bindparam("st"),
                    branch=sa.bindparam("br"),
                    updated_at=sa.bindparam("at"),
                    ended_at=sa.bindparam("end"),
                ),
                [{"e": k, **v} for k, v in sorted(self.saves.items())],
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
        if self.outbox:
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
