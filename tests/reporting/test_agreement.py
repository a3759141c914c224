"""Aggregations agree with a naive count over the raw events, on SQLite and PostgreSQL.

Generated histories mix events (names, users known and anonymous, campaign ids of every
JSON type, times around UTC midnights, retried ``message_id``s), aliases that merge
profiles, erasures and retention passes, applied by the real batch processor with the
rollup hook in batches of random sizes. Then every grouping is computed three ways where
it can be: from the plan the filter picks (rollups or user-days), from the events, and in
Python from the rows of ``events``; all must agree exactly.

The suite runs 25 generated histories per database; ``TIDINGS_AGREEMENT_EXAMPLES=300``
(with ``--timeout 0``) runs more, as after a change to the rollups.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from tests.conftest import create_project, make_services
from tidings.bootstrap import Services
from tidings.domain.ingest import AppendRequest, LogEntry
from tidings.pipeline.processor import BatchProcessor
from tidings.reporting import queries
from tidings.reporting.filters import EventFilter
from tidings.reporting.rollups import RollupHook
from tidings.settings import Settings
from tidings.store import hll
from tidings.store.retention import EventRetention
from tidings.store.tables import events, identities, profiles
from tidings.store.tables_reporting import event_day_sketches, event_rollups, event_user_days

HOUR = 3_600_000_000
DAY = 24 * HOUR
NOW = 1_768_003_200_000_000  # 2026-01-10T00:00:00Z
GROUPINGS = [
    list(c)
    for n in range(5)
    for c in itertools.combinations(("event_name", "campaign", "user", "day"), n)
]

names = st.sampled_from(["Opened", "Opened", "Clicked", "Bought"])
externals = st.sampled_from(["u1", "u2"])
anonymous = st.sampled_from(["a1", "a2", "a3"])
campaigns = st.sampled_from([None, 1, 2, "1", True, 1.5, {"x": 1}])
# Around midnights: every sixth hour plus a few odd microseconds, over the five days
# before NOW (which retention cuts in the middle of a day).
moments = st.builds(
    lambda hours, jitter: NOW - 5 * DAY + hours * 6 * HOUR + jitter,
    st.integers(0, 5 * 4),
    st.sampled_from([0, 1, -1, 999_999]),
)


@st.composite
def an_event(draw: Any) -> tuple[str, dict[str, Any]]:
    who = draw(st.sampled_from(["external", "anonymous", "anonymous", "both"]))
    payload: dict[str, Any] = {
        "name": draw(names),
        "message_id": f"m{draw(st.integers(0, 40))}",  # small pool: retries happen
        "created_at": draw(moments),
    }
    if who in ("external", "both"):
        payload["external_id"] = draw(externals)
    if who in ("anonymous", "both"):
        payload["anonymous_id"] = draw(anonymous)
    campaign = draw(campaigns)
    if campaign is not None:
        payload["data"] = {"campaign_id": campaign}
    return "event", payload


operations = st.lists(
    st.one_of(
        an_event(),
        an_event(),
        an_event(),
        an_event(),
        an_event(),
        st.builds(
            lambda a, x: ("alias", {"anonymous_id": a, "external_id": x}), anonymous, externals
        ),
        st.builds(
            lambda a, x: ("alias", {"anonymous_id": a, "external_id": x}), anonymous, externals
        ),
        st.builds(lambda x: ("erase", {"external_id": x}), externals),
        st.just(("retention", {})),
        st.just(("flush", {})),
        st.just(("flush", {})),
    ),
    min_size=1,
    max_size=50,
)


@pytest.fixture
def idle(settings: Settings) -> Iterator[Services]:
    services = make_services(settings)
    services.log.partitions = 1
    try:
        yield services
    finally:
        services.close()


def apply(services: Services, project_id: int, ops: list[tuple[str, dict[str, Any]]]) -> None:
    processor = BatchProcessor(
        services.db.writer, services.db.reader, services.profiles, hooks=[RollupHook()]
    )
    retention = EventRetention(services.db.writer, 3, clock=lambda: NOW + 7 * HOUR + 5)

    def flush(pending: list[tuple[str, dict[str, Any]]]) -> None:
        if not pending:
            return
        entries = [
            LogEntry(
                project_id=project_id,
                kind=kind,  # type: ignore[arg-type]
                partition=0,
                payload=payload,
                accepted_at=NOW,
            )
            for kind, payload in pending
        ]
        services.log.append([AppendRequest(entries)])
        position = services.profiles.positions().get(0, 0)
        processor.process(services.log.read(0, position, 1000), now=NOW)
        pending.clear()

    pending: list[tuple[str, dict[str, Any]]] = []
    for kind, payload in ops:
        if kind == "flush":
            flush(pending)
        elif kind == "retention":
            flush(pending)
            retention.run(force=True)
        else:
            pending.append((kind, dict(payload)))
    flush(pending)


def naive(services: Services, f: EventFilter, groups: list[str]) -> list[tuple[Any, ...]]:
    """The aggregation in Python, from the rows of ``events``."""
    with services.db.reader.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.name, events.c.profile_id, events.c.created_at, events.c.data).where(
                events.c.project_id == f.project_id
            )
        ).all()
        shown = {
            p.id: p.external_id
            for p in conn.execute(sa.select(profiles.c.id, profiles.c.external_id))
        }
        first_anonymous: dict[str, str] = {}
        for profile_id, value in conn.execute(
            sa.select(identities.c.profile_id, identities.c.value)
            .where(identities.c.kind == "anonymous")
            .order_by(identities.c.created_at, identities.c.value)
        ):
            first_anonymous.setdefault(profile_id, value)
    buckets: dict[tuple[Any, ...], list[Any]] = {}
    for name, profile_id, created_at, data in rows:
        if not f.start <= created_at < f.end or (f.names and name not in f.names):
            continue
        key = []
        for group in groups:
            if group == "event_name":
                key.append(name)
            elif group == "campaign":
                key.append(queries.campaign_of(data))
            elif group == "user":
                key.append((shown.get(profile_id), first_anonymous.get(profile_id), profile_id))
            else:
                key.append(queries.day_text(created_at - created_at % DAY))
        bucket = buckets.setdefault(tuple(key), [0, set(), created_at, created_at])
        bucket[0] += 1
        bucket[1].add(profile_id)
        bucket[2] = min(bucket[2], created_at)
        bucket[3] = max(bucket[3], created_at)
    if not groups and not buckets:
        return [(0, 0, None, None)]
    return sorted(
        (
            (*tuple(k[:2] if isinstance(k, tuple) else k for k in key), b[0], len(b[1]), b[2], b[3])
            for key, b in buckets.items()
        ),
        key=repr,
    )


def shaped(result: queries.Aggregation, groups: list[str]) -> list[tuple[Any, ...]]:
    out = []
    for row in result.results:
        key: list[Any] = []
        for group in groups:
            if group == "event_name":
                key.append(row["event_name"])
            elif group == "campaign":
                key.append(row["campaign_id"])
            elif group == "user":
                key.append((row["user"]["external_id"], row["user"]["anonymous_id"]))
            else:
                key.append(row["day"])
        out.append(
            (
                *key,
                row["count"],
                row["unique_user_count"],
                row["first_seen_at"],
                row["last_seen_at"],
            )
        )
    return sorted(out, key=repr)


def rollups_match_user_days(services: Services, project_id: int) -> None:
    """The stored invariants: the user-days are who had each event on each day, and
    each rollup counts its key's events (count, first/last seen) and user-days; none is
    empty."""
    u = event_user_days.c
    e = events.c
    day = e.created_at - ((e.created_at % DAY) + DAY) % DAY
    with services.db.reader.connect() as conn:
        stored = {
            (r.day, r.name): (r.count, r.users, r.first_seen_at, r.last_seen_at)
            for r in conn.execute(
                sa.select(event_rollups).where(event_rollups.c.project_id == project_id)
            )
        }
        users: dict[tuple[int, str], int] = {}
        for d, name in conn.execute(sa.select(u.day, u.name).where(u.project_id == project_id)):
            users[(d, name)] = users.get((d, name), 0) + 1
        summed = {
            (r.d, r.name): (r.c, users.get((r.d, r.name)), r.f, r.l)
            for r in conn.execute(
                sa.select(
                    day.label("d"),
                    e.name,
                    sa.func.count().label("c"),
                    sa.func.min(e.created_at).label("f"),
                    sa.func.max(e.created_at).label("l"),
                )
                .where(e.project_id == project_id)
                .group_by(day, e.name)
            )
        }
        who = set(
            conn.execute(
                sa.select(u.day, u.name, u.profile_id).where(u.project_id == project_id)
            ).all()
        )
        had = set(
            conn.execute(
                sa.select(day, e.name, e.profile_id).where(e.project_id == project_id).distinct()
            ).all()
        )
    assert stored == summed
    assert who == had
    # One sketch per rollup; each is the sketch of its key's users (or stale: NULL).
    with services.db.reader.connect() as conn:
        sketched = {
            (r.day, r.name): r.registers
            for r in conn.execute(
                sa.select(event_day_sketches).where(event_day_sketches.c.project_id == project_id)
            )
        }
        members: dict[tuple[int, str], list[str]] = {}
        for day, name, profile_id in conn.execute(
            sa.select(u.day, u.name, u.profile_id).where(u.project_id == project_id)
        ):
            members.setdefault((day, name), []).append(profile_id)
    assert set(sketched) == set(stored)
    for key, registers in sketched.items():
        assert registers is None or registers == hll.registers_of(members[key]), key


@settings(
    max_examples=int(os.environ.get("TIDINGS_AGREEMENT_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
# A merge of two profiles that both have user-days of one name and day; an erasure of a
# user with another's events the same day; retention through the middle of a day.
@example(
    ops=[
        (
            "event",
            {"name": "Opened", "message_id": "m1", "created_at": NOW - DAY, "anonymous_id": "a1"},
        ),
        (
            "event",
            {
                "name": "Opened",
                "message_id": "m2",
                "created_at": NOW - DAY + 9,
                "external_id": "u1",
            },
        ),
        (
            "event",
            {
                "name": "Opened",
                "message_id": "m3",
                "created_at": NOW - DAY + 5,
                "external_id": "u2",
            },
        ),
        ("flush", {}),
        ("alias", {"anonymous_id": "a1", "external_id": "u1"}),
        ("event", {"name": "Opened", "message_id": "m1", "created_at": NOW, "external_id": "u2"}),
        ("flush", {}),
        ("erase", {"external_id": "u1"}),
    ]
)
@example(
    ops=[
        (
            "event",
            {
                "name": "Opened",
                "message_id": f"m{i}",
                "created_at": NOW - 4 * DAY + i * 5 * HOUR,
                "anonymous_id": f"a{i % 3}",
            },
        )
        for i in range(12)
    ]
    + [("retention", {})]
)
# Retention of users whose events are all older than the cutoff: days before its day, and
# its own day before the cutoff's time.
@example(
    ops=[
        (
            "event",
            {
                "name": "Opened",
                "message_id": "m1",
                "created_at": NOW - 4 * DAY,
                "anonymous_id": "a1",
            },
        ),
        (
            "event",
            {
                "name": "Opened",
                "message_id": "m2",
                "created_at": NOW - 3 * DAY + HOUR,
                "anonymous_id": "a2",
            },
        ),
        (
            "event",
            {
                "name": "Opened",
                "message_id": "m3",
                "created_at": NOW - 3 * DAY + 9 * HOUR,
                "anonymous_id": "a3",
            },
        ),
        ("flush", {}),
        ("retention", {}),
    ]
)
def test_aggregations_agree_with_a_naive_count(idle: Services, ops: list[Any]) -> None:
    project = create_project(idle)
    note(repr(ops))
    apply(idle, project.id, ops)
    rollups_match_user_days(idle, project.id)
    ranges = [
        (NOW - 6 * DAY, NOW + DAY),  # whole days past every event: rollups and user-days
        (NOW - 4 * DAY, NOW - DAY),  # whole days, events after: rollups and user-days
        (NOW - 3 * DAY + 5 * HOUR, NOW - DAY),  # a partial day: the events answer
    ]
    with idle.db.reader.connect() as conn:
        for start, end in ranges:
            f = EventFilter.build(project.id, start, end)
            for groups in GROUPINGS:
                expected = naive(idle, f, groups)
                picked = queries.aggregate(conn, f, groups)
                assert shaped(picked, groups) == expected, (groups, picked.source)
                scanned = queries.aggregate(conn, f, groups, source="events")
                assert shaped(scanned, groups) == expected, groups
        # A name filter, on each plan.
        f = EventFilter.build(project.id, NOW - 6 * DAY, NOW + DAY, names=["Opened", "Bought"])
        for groups in (["day"], ["event_name", "day"], ["user"], [], ["event_name"]):
            assert shaped(queries.aggregate(conn, f, groups), groups) == naive(idle, f, groups)
        # The sketches: exact counts and first/last seen, users within the estimate's
        # error (a handful of users: exact, bar a hash collision in 4,096 registers).
        for groups in ([], ["event_name"]):
            sketched = queries.aggregate(conn, f, groups, source="sketches")
            assert sketched.source == "sketches"
            assert shaped(sketched, groups) == naive(idle, f, groups)
