"""Dynamic lists in real time: membership follows every batch, and the clock.

Three callers share what is here:

* ``RealtimeSegments.apply``, called by the pipeline inside each batch's write
  transaction, after the batch's profiles and events are written: it re-evaluates only
  the (list, profile) pairs the batch can have changed, found through an index from what
  each list's rule reads (event names, profile fields, top-level trait keys) to the lists;
  a new profile, or the survivor of a merge, is evaluated against every dynamic list of
  its project. Each pair is evaluated in Python (``tidings.domain.rules.evaluate``) with
  the profile's facts and its events of the names the rule reads, loaded with one query
  per batch inside the transaction (so the batch's own events are seen).
* ``SegmentTimers.run_due``, called by the worker between batches: after every evaluation
  a pair's timer is set to ``next_change`` (the instant the clock alone flips the result:
  an event leaving a rolling window), and at that instant the worker evaluates the pair
  again and records the change *at that instant*.
* ``segments.backfill``, which computes a new or edited rule over all history.

Membership changes go through ``ListStore.record_changes``: members, one ``entered`` or
``left`` fact each (with the list's version), ``users_count``, in the caller's
transaction.

Locks (PostgreSQL; SQLite has one writer at a time), always in this order: profiles in id
order, then lists in id order, then members and timers of those profiles. The pipeline
holds its profiles ``FOR UPDATE`` (``BatchProcessor`` with ``concurrent``) and takes the
lists it evaluates ``FOR KEY SHARE``: that keeps their version, state and back-fill cursor
still while it decides, without making two workers wait for each other (their
``users_count`` updates take the row in turn). A back-fill chunk takes the list
``FOR UPDATE``, so it and the pipeline see each other's work whole. The timer worker takes
its profiles ``FOR UPDATE SKIP LOCKED`` (a profile busy elsewhere waits for the next pass)
and its lists ``FOR NO KEY UPDATE``.

A list that is ``loading`` is evaluated here only for profiles whose id is at or below
its back-fill cursor: those the back-fill has done at the current version. It reaches
the others later, reading the data as they are then (see docs/segments.md).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from tidings.domain.errors import ValidationFailed
from tidings.domain.rules import (
    Condition,
    Dependencies,
    EventFact,
    EventRule,
    ProfileFacts,
    RelativeDate,
    Rolling,
    Rule,
    Wrapper,
    dependencies,
    evaluate,
    next_change,
    parse_rule,
)
from tidings.store.bulk import BulkInsert
from tidings.store.database import Writer
from tidings.store.lists import ListStore, MembershipChange
from tidings.store.profiles import ProfileRow
from tidings.store.tables import events, list_members, lists, profiles, segment_timers

__all__ = [
    "BatchChanges",
    "LiveList",
    "ProfileChange",
    "RealtimeSegments",
    "SegmentTimers",
    "among",
    "drift",
    "insert_timers",
    "load_events",
    "load_facts",
    "profile_state",
    "write_timers",
]

logger = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

_CHUNK = 5000  # ids per statement (passed as one array parameter, see ``among``)
_FIELDS = ("external_id", "email", "phone", "timezone", "locale", "created_at")

Drift = Literal["const", "down", "up", "any"]
ProfileState = tuple[Any, ...]


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def among(conn: Connection, column: Any, values: Sequence[str]) -> Any:
    """``column IN (values)`` as one parameter: an array on PostgreSQL, a JSON array read
    with ``json_each`` on SQLite. Both plan it as index probes, and the statement is the
    same whatever the number of values (an ``IN`` of 500 placeholders cost SQLAlchemy
    about 5 ms per statement to expand, twice what SQLite took to run it)."""
    if conn.dialect.name == "postgresql":
        array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.String))
        return column == sa.any_(array)
    table = sa.func.json_each(sa.bindparam(None, _encode(list(values)).decode())).table_valued(
        "value"
    )
    return column.in_(sa.select(table.c.value))


# -- what a batch changed -----------------------------------------------------------------------


def profile_state(row: ProfileRow) -> ProfileState:
    """What rules can read of a profile, as it was loaded (to tell later what changed)."""
    return (*(getattr(row, name) for name in _FIELDS), dict(row.data))


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """Which profile columns and top-level trait keys changed; ``everything`` for a new
    profile or the survivor of a merge (it may now match any list)."""

    fields: frozenset[str] = frozenset()
    trait_keys: frozenset[str] = frozenset()
    everything: bool = False


@dataclass
class BatchChanges:
    """What one batch wrote that lists can depend on."""

    profiles: dict[str, ProfileRow] = field(default_factory=dict)  # as written
    changed: dict[str, ProfileChange] = field(default_factory=dict)
    events: list[tuple[int, str, str]] = field(default_factory=list)  # project, profile, name
    gone: list[str] = field(default_factory=list)  # merged away or erased

    @classmethod
    def collect(
        cls,
        written: Iterable[ProfileRow],
        before: Mapping[str, ProfileState],
        inserted: Iterable[Mapping[str, Any]],
        merges: Iterable[tuple[int, str, str]],
        erased: Iterable[tuple[int, str]],
    ) -> BatchChanges:
        """From the batch's profiles (``before``: their state when loaded), its inserted
        event rows, its merges (project, absorbed, survivor) and erasures."""
        merges = list(merges)
        survivors = {survivor for _, _, survivor in merges}
        changes = cls(
            gone=[absorbed for _, absorbed, _ in merges] + [p for _, p in erased],
        )
        for row in written:
            changes.profiles[row.id] = row
            old = before.get(row.id)
            if row.is_new or row.id in survivors or (row.dirty and old is None):
                changes.changed[row.id] = ProfileChange(everything=True)
                continue
            if not row.dirty or old is None:
                continue
            new = profile_state(row)
            fields = frozenset(n for n, a, b in zip(_FIELDS, old, new, strict=False) if a != b)
            old_data, new_data = old[-1], new[-1]
            keys = frozenset(
                k
                for k in old_data.keys() | new_data.keys()
                if old_data.get(k, _ABSENT) != new_data.get(k, _ABSENT)
            )
            if fields or keys:
                changes.changed[row.id] = ProfileChange(fields, keys)
        changes.events = [(e["project_id"], e["profile_id"], e["name"]) for e in inserted]
        return changes


_ABSENT = object()


# -- one list's rule, and what it needs ---------------------------------------------------------


def _event_rules(rule: Rule) -> Iterator[EventRule]:
    if isinstance(rule, EventRule):
        yield rule
    elif isinstance(rule, Wrapper):
        for child in rule.children:
            yield from _event_rules(child)


def _leaves(rule: Rule) -> Iterator[Condition]:
    if isinstance(rule, Condition):
        yield rule
    elif isinstance(rule, Wrapper | EventRule):
        for child in rule.children:
            yield from _leaves(child)


def _relative(condition: Condition) -> bool:
    return isinstance(condition.operand, RelativeDate)


def _user_clock(rule: Rule) -> bool:
    """A user condition with a relative date: any profile may flip with the clock."""
    if isinstance(rule, Condition):
        return _relative(rule)
    if isinstance(rule, Wrapper):
        return any(_user_clock(child) for child in rule.children)
    return False


def drift(rule: Rule) -> Drift:
    """How the result can move as the clock runs, with no new input and leaving aside
    events dated in the future: ``const`` never, ``down`` only from true to false (an
    event leaving an "at least N in the last 30 days" window), ``up`` only from false to
    true, ``any`` either way."""
    if isinstance(rule, Condition):
        return "any" if _relative(rule) else "const"
    if isinstance(rule, EventRule):
        if any(_relative(leaf) for leaf in _leaves(rule)):
            return "any"
        frequency = rule.frequency
        if frequency is None or not isinstance(frequency.period, Rolling):
            return "const"  # counts grow only through events dated in the future
        op, n = frequency.operator, frequency.count
        if op in (">", ">="):
            return "down"
        if op in ("<", "<=") or n == 0:
            return "up"
        return "any"
    kinds = {drift(child) for child in rule.children} - {"const"}
    if not kinds:
        return "const"
    if rule.operator == "xor" or "any" in kinds or len(kinds) > 1:
        return "any"
    (kind,) = kinds
    if rule.operator == "none":
        return "up" if kind == "down" else "down"
    return kind


def _at_least(rule: Rule) -> tuple[str, int, int] | None:
    """(name, window, n) if the rule is exactly "at least n (n >= 1) events named name,
    with no conditions on them, within a rolling window"."""
    frequency = rule.frequency if isinstance(rule, EventRule) else None
    if not isinstance(rule, EventRule) or rule.children or frequency is None:
        return None
    if not isinstance(frequency.period, Rolling) or frequency.operator not in (">", ">="):
        return None
    n = frequency.count + (1 if frequency.operator == ">" else 0)
    return (rule.name, frequency.period.length, n) if n >= 1 else None


@dataclass(frozen=True)
class LiveList:
    """A dynamic list's current rule, parsed, with what evaluating it needs."""

    id: int
    project_id: int
    version: int
    rule: Rule
    deps: Dependencies
    #: Events older than ``now - window`` never count; None: events of any age may.
    window: int | None
    #: Per event name: events younger than ``now - bound`` can make the clock flip the
    #: result (None: of any age; 0: only those dated in the future).
    clock_bounds: dict[str, int | None]
    drift: Drift
    user_clock: bool
    event_data: bool  # some event rule reads the events' data
    profile_data: bool  # some condition reads the profile
    #: (name, window, n) when the whole rule is "at least n events named name in the last
    #: window": the most common segment, whose next change has a closed form.
    at_least: tuple[str, int, int] | None = None

    @classmethod
    def of(cls, list_id: int, project_id: int, version: int, raw: Any) -> LiveList:
        rule = parse_rule(raw)
        deps = dependencies(rule)
        window: int | None = 0
        bounds: dict[str, int | None] = {}
        for node in _event_rules(rule):
            period = node.frequency.period if node.frequency is not None else None
            length = period.length if isinstance(period, Rolling) else None
            window = None if window is None or length is None else max(window, length)
            relative = any(_relative(leaf) for leaf in _leaves(node))
            bound: int | None = None if relative else length or 0
            if node.name in bounds:
                old = bounds[node.name]
                bound = None if old is None or bound is None else max(old, bound)
            bounds[node.name] = bound
        return cls(
            id=list_id,
            project_id=project_id,
            version=version,
            rule=rule,
            deps=deps,
            window=window,
            clock_bounds=bounds,
            drift=drift(rule),
            user_clock=_user_clock(rule),
            event_data=any(node.children for node in _event_rules(rule)),
            profile_data=bool(deps.profile_fields or deps.trait_paths),
            at_least=_at_least(rule),
        )

    @property
    def names(self) -> frozenset[str]:
        return self.deps.event_names

    def since(self, now: int) -> int | None:
        """The events to load for an evaluation at ``now`` or later: younger than this."""
        return None if self.window is None else now - self.window

    def next_change(
        self, profile: ProfileFacts, events: Sequence[EventFact], now: int, matched: bool
    ) -> int | None:
        """``next_change``, without computing it when the rule's ``drift`` says that the
        clock cannot flip this result (``matched`` at ``now``): a non-member of an "at
        least N in the last 30 days" list stays one until a new event arrives, unless
        one of its events is dated ahead."""
        settled = self.drift == "const" or (self.drift != "any" and matched == (self.drift == "up"))
        if (settled or self.at_least) and all(event.created_at <= now for event in events):
            if settled:
                return None
            assert self.at_least is not None
            # A member of "at least n in the window" leaves when the n-th most recent of
            # its counted events leaves the window (nothing is dated ahead).
            name, window, n = self.at_least
            recent = sorted(
                (e.created_at for e in events if e.name == name and e.created_at > now - window),
                reverse=True,
            )
            if len(recent) >= n:
                return recent[n - 1] + window
        return next_change(self.rule, profile, events, now)


@dataclass
class _ProjectIndex:
    all: list[int] = field(default_factory=list)
    by_event: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_field: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_trait: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, live: LiveList) -> None:
        self.all.append(live.id)
        for name in live.deps.event_names:
            self.by_event[name].append(live.id)
        for name in live.deps.profile_fields:
            self.by_field[name].append(live.id)
        for top in {path[0] for path in live.deps.trait_paths}:
            self.by_trait[top].append(live.id)


@dataclass(frozen=True, slots=True)
class _ListState:
    version: int
    loading: bool
    cursor: str | None  # the back-fill's, when it is at the current version

    def covers(self, profile_id: str) -> bool:
        """Whether the real-time path evaluates this profile for the list now."""
        return not self.loading or (self.cursor is not None and profile_id <= self.cursor)


_SIGNATURE = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.max(lists.c.id), 0),
    sa.func.coalesce(sa.func.sum(lists.c.version), 0),
    sa.func.coalesce(sa.func.max(lists.c.updated_at), 0),
).where(lists.c.type == "dynamic", lists.c.deleted_at.is_(None))


# -- reading facts ---------------------------------------------------------------------------


def load_facts(
    conn: Connection, ids: Iterable[str], *, data: bool = True
) -> dict[str, ProfileFacts]:
    """The facts user conditions read, for these profiles (those that exist)."""
    found: dict[str, ProfileFacts] = {}
    columns: list[Any] = [profiles.c[name] for name in ("id", *_FIELDS)]
    columns.append(profiles.c.data if data else sa.null().label("data"))
    for chunk in _chunks(sorted(set(ids))):
        for row in conn.execute(sa.select(*columns).where(among(conn, profiles.c.id, chunk))):
            found[row.id] = ProfileFacts(
                id=row.id,
                external_id=row.external_id,
                email=row.email,
                phone=row.phone,
                timezone=row.timezone,
                locale=row.locale,
                data=row.data or {},
                created_at=row.created_at,
            )
    return found


def facts_of(row: ProfileRow) -> ProfileFacts:
    return ProfileFacts(
        id=row.id,
        external_id=row.external_id,
        email=row.email,
        phone=row.phone,
        timezone=row.timezone,
        locale=row.locale,
        data=row.data,
        created_at=row.created_at,
    )


def load_events(
    conn: Connection,
    project_id: int,
    ids: Iterable[str],
    names: Iterable[str],
    since: int | None,
    *,
    data: bool = True,
) -> dict[str, list[EventFact]]:
    """These profiles' events with these names dated after ``since`` (None: any date),
    the future included, by profile."""
    found: dict[str, list[EventFact]] = defaultdict(list)
    name_list = sorted(set(names))
    if not name_list:
        return found
    data_column = events.c.data if data else sa.null().label("data")
    for chunk in _chunks(sorted(set(ids))):
        query = sa.select(events.c.profile_id, events.c.name, data_column, events.c.created_at)
        query = query.where(
            events.c.project_id == project_id,
            among(conn, events.c.profile_id, chunk),
            events.c.name.in_(name_list),
        )
        if since is not None:
            query = query.where(events.c.created_at > since)
        for profile_id, name, payload, created_at in conn.execute(query):
            found[profile_id].append(EventFact(name, payload or {}, created_at))
    return found


def _pairs_query(
    conn: Connection, table: sa.Table, list_ids: Sequence[int], chunk: Sequence[str]
) -> sa.Select[Any]:
    return sa.select(table).where(
        table.c.list_id.in_(list_ids), among(conn, table.c.profile_id, chunk)
    )


def write_timers(
    conn: Connection,
    upserts: Sequence[tuple[int, str, int]],
    deletes: Sequence[tuple[int, str]],
) -> None:
    """Set (list, profile, due) timers and drop (list, profile) ones."""
    by_list: dict[int, list[str]] = defaultdict(list)
    for list_id, profile_id in deletes:
        by_list[list_id].append(profile_id)
    for list_id, ids in sorted(by_list.items()):
        for chunk in _chunks(sorted(ids)):
            conn.execute(
                sa.delete(segment_timers).where(
                    segment_timers.c.list_id == list_id,
                    among(conn, segment_timers.c.profile_id, chunk),
                )
            )
    if upserts and conn.dialect.name == "postgresql":
        # Arrays: one statement text whatever the number of rows (see ``among``).
        columns = tuple(list(column) for column in zip(*sorted(upserts), strict=True))
        conn.exec_driver_sql(_PG_UPSERT_TIMERS, columns)
    elif upserts:
        _timer_writer(conn, upsert=True)(conn, sorted(upserts))


_PG_UPSERT_TIMERS = (
    "INSERT INTO segment_timers (list_id, profile_id, due_at) "
    "SELECT * FROM unnest(%s::integer[], %s::varchar[], %s::bigint[]) "
    "ON CONFLICT (list_id, profile_id) DO UPDATE SET due_at = excluded.due_at"
)


_TIMER_WRITERS: dict[tuple[str, str, bool], BulkInsert] = {}


def _timer_writer(conn: Connection, *, upsert: bool) -> BulkInsert:
    """Multi-row inserts of timers (COPY on PostgreSQL when nothing can conflict)."""
    key = (conn.dialect.name, conn.dialect.paramstyle, upsert)
    found = _TIMER_WRITERS.get(key)
    if found is None:
        suffix = (
            "ON CONFLICT (list_id, profile_id) DO UPDATE SET due_at = excluded.due_at"
            if upsert
            else ""
        )
        found = _TIMER_WRITERS[key] = BulkInsert(
            key[0], key[1], "segment_timers", ("list_id", "profile_id", "due_at"), suffix=suffix
        )
    return found


def insert_timers(conn: Connection, rows: Sequence[tuple[int, str, int]]) -> None:
    """New (list, profile, due) timers, none of which exists yet."""
    if rows:
        _timer_writer(conn, upsert=False)(conn, rows)


# -- the real-time path -------------------------------------------------------------------------


class RealtimeSegments:
    """The dependency index of every project's dynamic lists (cached; refreshed when a
    cheap signature of the ``lists`` table changes), and the real-time evaluation."""

    def __init__(self) -> None:
        self._signature: tuple[Any, ...] | None = None
        self._lists: dict[int, LiveList] = {}
        self._projects: dict[int, _ProjectIndex] = {}
        self.evaluations = 0  # (list, profile) pairs evaluated, for tests and benchmarks
        self.refreshes = 0

    # -- the index ------------------------------------------------------------------------

    def refresh(self, conn: Connection) -> None:
        """Reload the lists if one was created, deleted or given a new rule."""
        signature = tuple(conn.execute(_SIGNATURE).one())
        if signature == self._signature:
            return
        rows = conn.execute(
            sa.select(lists.c.id, lists.c.project_id, lists.c.version, lists.c.rule).where(
                lists.c.type == "dynamic", lists.c.deleted_at.is_(None)
            )
        )
        found: dict[int, LiveList] = {}
        for row in rows:
            old = self._lists.get(row.id)
            if old is not None and old.version == row.version:
                found[row.id] = old
                continue
            live = self._parse(row.id, row.project_id, row.version, row.rule)
            if live is not None:
                found[row.id] = live
        self._lists = found
        self._reindex()
        self._signature = signature
        self.refreshes += 1

    def _reindex(self) -> None:
        projects: dict[int, _ProjectIndex] = defaultdict(_ProjectIndex)
        for live in sorted(self._lists.values(), key=lambda item: item.id):
            projects[live.project_id].add(live)
        self._projects = dict(projects)

    @staticmethod
    def _parse(list_id: int, project_id: int, version: int, raw: Any) -> LiveList | None:
        try:
            return LiveList.of(list_id, project_id, version, raw)
        except (ValidationFailed, TypeError, ValueError):
            logger.error("dynamic list %s has a rule this version cannot read", list_id)
            return None

    def live(self, conn: Connection, list_id: int, version: int) -> LiveList | None:
        """The list's rule at ``version`` (read again if the cache has another)."""
        cached = self._lists.get(list_id)
        if cached is not None and cached.version == version:
            return cached
        row = conn.execute(
            sa.select(lists.c.project_id, lists.c.version, lists.c.rule).where(
                lists.c.id == list_id
            )
        ).first()
        if row is None or row.version != version or row.rule is None:
            return None
        live = self._parse(list_id, row.project_id, row.version, row.rule)
        if live is not None:
            self._lists[list_id] = live
            self._signature = None  # re-read everything at the next refresh
        return live

    def affected(self, changes: BatchChanges) -> dict[int, set[str]]:
        """The (list → profiles) pairs the batch can have changed."""
        wanted: dict[int, set[str]] = defaultdict(set)
        for project_id, profile_id, name in changes.events:
            index = self._projects.get(project_id)
            if index is not None:
                for list_id in index.by_event.get(name, ()):
                    wanted[list_id].add(profile_id)
        for profile_id, change in changes.changed.items():
            index = self._projects.get(changes.profiles[profile_id].project_id)
            if index is None:
                continue
            if change.everything:
                list_ids: Iterable[int] = index.all
            else:
                found: set[int] = set()
                for name in change.fields:
                    found.update(index.by_field.get(name, ()))
                for key in change.trait_keys:
                    found.update(index.by_trait.get(key, ()))
                list_ids = found
            for list_id in list_ids:
                wanted[list_id].add(profile_id)
        gone = set(changes.gone)
        return {lid: ids - gone for lid, ids in wanted.items() if ids - gone}

    # -- applying a batch ----------------------------------------------------------------

    def apply(self, conn: Connection, changes: BatchChanges, now: int) -> None:
        """Bring the dynamic lists up to date with a batch, in its transaction (called
        after the batch's profiles and events are written)."""
        if changes.gone:
            for chunk in _chunks(sorted(set(changes.gone))):
                conn.execute(
                    sa.delete(segment_timers).where(among(conn, segment_timers.c.profile_id, chunk))
                )
        if not changes.events and not changes.changed:
            return
        self.refresh(conn)
        if not self._lists:
            return
        wanted = self.affected(changes)
        if wanted:
            known = {pid: facts_of(row) for pid, row in changes.profiles.items()}
            self.evaluate(conn, wanted, now, known=known)

    def evaluate(
        self,
        conn: Connection,
        wanted: Mapping[int, set[str]],
        now: int,
        *,
        known: Mapping[str, ProfileFacts] | None = None,
    ) -> None:
        """Evaluate these (list → profiles) pairs at ``now`` and write the differences:
        members, facts, ``users_count`` and timers."""
        states = lock_lists(conn, sorted(wanted), write=False)
        pairs: dict[int, list[str]] = {}
        chosen: dict[int, LiveList] = {}
        for list_id in sorted(wanted):
            state = states.get(list_id)
            if state is None:
                continue
            live = self.live(conn, list_id, state.version)
            if live is None:
                continue
            ids = sorted(p for p in wanted[list_id] if state.covers(p))
            if ids:
                pairs[list_id] = ids
                chosen[list_id] = live
        if not pairs:
            return
        facts = dict(known or {})
        missing = {p for ids in pairs.values() for p in ids if p not in facts}
        if missing:
            facts.update(load_facts(conn, missing))
        history = self._history(conn, chosen, pairs, now)
        results: dict[tuple[int, str], tuple[bool, int | None]] = {}
        for list_id, ids in pairs.items():
            live = chosen[list_id]
            for profile_id in ids:
                profile = facts.get(profile_id)
                if profile is None:
                    continue
                own = [e for e in history.get(profile_id, ()) if e.name in live.names]
                matched = evaluate(live.rule, profile, own, now)
                due = live.next_change(profile, own, now, matched)
                results[(list_id, profile_id)] = (matched, due)
                self.evaluations += 1
        write_results(conn, results, {lid: states[lid].version for lid in pairs}, now, chosen)

    @staticmethod
    def _history(
        conn: Connection,
        chosen: Mapping[int, LiveList],
        pairs: Mapping[int, Sequence[str]],
        now: int,
    ) -> dict[str, list[EventFact]]:
        """One query per project: the events the chosen lists read, of their profiles."""
        by_project: dict[int, tuple[set[str], set[str], list[int | None], list[bool]]] = {}
        for list_id, ids in pairs.items():
            live = chosen[list_id]
            if not live.names:
                continue
            entry = by_project.setdefault(live.project_id, (set(), set(), [], []))
            entry[0].update(ids)
            entry[1].update(live.names)
            entry[2].append(live.since(now))
            entry[3].append(live.event_data)
        history: dict[str, list[EventFact]] = {}
        for project_id, (profile_ids, names, sinces, data) in by_project.items():
            bounded = [s for s in sinces if s is not None]
            since = min(bounded) if len(bounded) == len(sinces) else None
            history.update(load_events(conn, project_id, profile_ids, names, since, data=any(data)))
        return history


def lock_lists(conn: Connection, list_ids: Sequence[int], *, write: bool) -> dict[int, _ListState]:
    """The dynamic lists among these that are alive, locked in id order (``FOR KEY
    SHARE``, or ``FOR NO KEY UPDATE`` with ``write``; nothing on SQLite)."""
    found: dict[int, _ListState] = {}
    for chunk in _chunks(sorted(list_ids)):
        rows = conn.execute(
            sa.select(
                lists.c.id,
                lists.c.version,
                lists.c.state,
                lists.c.backfill_version,
                lists.c.backfill_cursor,
            )
            .where(lists.c.id.in_(chunk), lists.c.type == "dynamic", lists.c.deleted_at.is_(None))
            .order_by(lists.c.id)
            .with_for_update(read=not write, key_share=True)
        )
        for row in rows:
            cursor = row.backfill_cursor if row.backfill_version == row.version else None
            found[row.id] = _ListState(row.version, row.state == "loading", cursor)
    return found


def write_results(
    conn: Connection,
    results: Mapping[tuple[int, str], tuple[bool, int | None]],
    versions: Mapping[int, int],
    now: int,
    chosen: Mapping[int, LiveList],
) -> None:
    """Diff evaluated pairs (matched, next change) with the stored members and timers,
    and write what differs."""
    list_ids = sorted({lid for lid, _ in results})
    profile_ids = sorted({pid for _, pid in results})
    members: set[tuple[int, str]] = set()
    timers: dict[tuple[int, str], int] = {}
    for chunk in _chunks(profile_ids):
        for row in conn.execute(
            _pairs_query(conn, list_members, list_ids, chunk).with_only_columns(
                list_members.c.list_id, list_members.c.profile_id
            )
        ):
            members.add((row.list_id, row.profile_id))
        for row in conn.execute(_pairs_query(conn, segment_timers, list_ids, chunk)):
            timers[(row.list_id, row.profile_id)] = row.due_at
    entered: dict[int, list[str]] = defaultdict(list)
    left: dict[int, list[str]] = defaultdict(list)
    upserts: list[tuple[int, str, int]] = []
    deletes: list[tuple[int, str]] = []
    for (list_id, profile_id), (matched, due) in results.items():
        if matched and (list_id, profile_id) not in members:
            entered[list_id].append(profile_id)
        elif not matched and (list_id, profile_id) in members:
            left[list_id].append(profile_id)
        stored = timers.get((list_id, profile_id))
        if due is None and stored is not None:
            deletes.append((list_id, profile_id))
        elif due is not None and due != stored:
            upserts.append((list_id, profile_id, due))
    ListStore.record_changes(
        conn,
        [
            MembershipChange(chosen[lid].project_id, lid, versions[lid], pid, add, now)
            for lid in list_ids
            for ids, add in ((entered.get(lid, []), True), (left.get(lid, []), False))
            for pid in sorted(ids)
        ],
    )
    write_timers(conn, upserts, deletes)


# -- timers ----------------------------------------------------------------------------------


class SegmentTimers:
    """Fires due ``segment_timers``: each due pair is evaluated at its due instant (and
    again at each later instant the clock flips it, up to now), so that a member leaves
    exactly when its counted events leave the window. Cheap when nothing is due: one
    index lookup of the earliest ``due_at``."""

    def __init__(
        self, writer: Writer, reader: Engine, realtime: RealtimeSegments, *, batch: int = 500
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.realtime = realtime
        self.batch = batch
        self.postgres = writer.dialect.name == "postgresql"
        self.fired = 0  # pairs evaluated because a timer came due

    def next_due(self) -> int | None:
        with self.reader.connect() as conn:
            due = conn.execute(sa.select(sa.func.min(segment_timers.c.due_at))).scalar()
        return None if due is None else int(due)

    def run_due(self, now: int) -> int:
        """Fire up to ``batch`` pairs due at ``now``; how many timers were handled."""
        due = self.next_due()
        if due is None or due > now:
            return 0
        with self.writer.begin() as conn:
            return self._run(conn, now)

    def _run(self, conn: Connection, now: int) -> int:
        candidates = sorted(
            set(
                conn.execute(
                    sa.select(segment_timers.c.profile_id)
                    .where(segment_timers.c.due_at <= now)
                    .order_by(segment_timers.c.due_at)
                    .limit(self.batch)
                ).scalars()
            )
        )
        if not candidates:
            return 0
        held: set[str] = set()
        for chunk in _chunks(candidates):
            held.update(
                conn.execute(
                    sa.select(profiles.c.id)
                    .where(among(conn, profiles.c.id, chunk))
                    .order_by(profiles.c.id)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
        others = [p for p in candidates if p not in held]
        handled = 0
        if others:  # busy elsewhere (next pass), or gone: merged away or erased
            exists: set[str] = set()
            for chunk in _chunks(others):
                exists.update(
                    conn.execute(
                        sa.select(profiles.c.id).where(among(conn, profiles.c.id, chunk))
                    ).scalars()
                )
            gone = [p for p in others if p not in exists]
            for chunk in _chunks(gone):
                handled += (
                    conn.execute(
                        sa.delete(segment_timers).where(
                            among(conn, segment_timers.c.profile_id, chunk)
                        )
                    ).rowcount
                    or 0
                )
        if not held:
            return handled
        due: list[tuple[int, str, int]] = []
        for chunk in _chunks(sorted(held)):
            rows = conn.execute(
                sa.select(
                    segment_timers.c.list_id, segment_timers.c.profile_id, segment_timers.c.due_at
                ).where(
                    among(conn, segment_timers.c.profile_id, chunk), segment_timers.c.due_at <= now
                )
            )
            due.extend((row.list_id, row.profile_id, row.due_at) for row in rows)
        states = lock_lists(conn, sorted({lid for lid, _, _ in due}), write=True)
        chosen: dict[int, LiveList] = {}
        firing: list[tuple[int, str, int]] = []
        dropped: list[tuple[int, str]] = []
        for list_id, profile_id, at in due:
            state = states.get(list_id)
            live = self.realtime.live(conn, list_id, state.version) if state else None
            if state is None or live is None or not state.covers(profile_id):
                # A deleted list; or one loading whose back-fill will set a fresh timer.
                dropped.append((list_id, profile_id))
                continue
            chosen[list_id] = live
            firing.append((list_id, profile_id, at))
        write_timers(conn, [], dropped)
        handled += len(dropped)
        if not firing:
            return handled
        facts = load_facts(conn, {pid for _, pid, _ in firing})
        earliest = min(at for _, _, at in firing)
        pairs: dict[int, list[str]] = defaultdict(list)
        for list_id, profile_id, _ in firing:
            pairs[list_id].append(profile_id)
        history = RealtimeSegments._history(conn, chosen, pairs, earliest)
        members: set[tuple[int, str]] = set()
        list_ids = sorted(chosen)
        for chunk in _chunks(sorted({pid for _, pid, _ in firing})):
            for row in conn.execute(
                _pairs_query(conn, list_members, list_ids, chunk).with_only_columns(
                    list_members.c.list_id, list_members.c.profile_id
                )
            ):
                members.add((row.list_id, row.profile_id))
        changes: list[MembershipChange] = []
        upserts: list[tuple[int, str, int]] = []
        deletes: list[tuple[int, str]] = []
        for list_id, profile_id, at in firing:
            live = chosen[list_id]
            profile = facts.get(profile_id)
            if profile is None:
                deletes.append((list_id, profile_id))
                continue
            own = [e for e in history.get(profile_id, ()) if e.name in live.names]
            member = (list_id, profile_id) in members
            instant: int | None = at
            while instant is not None and instant <= now:
                matched = evaluate(live.rule, profile, own, instant)
                self.realtime.evaluations += 1
                if matched != member:
                    version = states[list_id].version
                    change = (live.project_id, list_id, version, profile_id, matched, instant)
                    changes.append(MembershipChange(*change))
                    member = matched
                instant = next_change(live.rule, profile, own, instant)
            if instant is None:
                deletes.append((list_id, profile_id))
            else:
                upserts.append((list_id, profile_id, instant))
        ListStore.record_changes(conn, changes)  # each at its instant
        write_timers(conn, upserts, deletes)
        self.fired += len(firing)
        return handled + len(firing)
