"""What a rule reads, and when its result can change with nothing new arriving.

The real-time path re-evaluates a segment for a profile only when an input the rule
reads arrives (``dependencies``), and sets a timer for the instant the clock alone
changes the result (``next_change``): a counted event leaving a rolling window, an event
dated in the future coming due, a relative date ("30 days ago") passing a stored date.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tidings.domain.rules.dates import start_of_day
from tidings.domain.rules.evaluate import (
    EventFact,
    ProfileFacts,
    check_condition,
    combine,
    counts,
    date_value,
    lookup,
    verdict,
)
from tidings.domain.rules.model import (
    DAY,
    PRESENCE_OPERATORS,
    Combinator,
    Condition,
    EventRule,
    Field,
    RelativeDate,
    Rolling,
    Rule,
    Wrapper,
)

__all__ = ["Dependencies", "dependencies", "next_change"]


@dataclass(frozen=True, slots=True)
class Dependencies:
    """The inputs a rule reads.

    ``event_names``: events whose arrival can change the result. ``profile_fields``:
    profile columns read (``email``, ``created_at``…). ``trait_paths``: keys into the
    profile's ``data`` (``("address", "city")``). ``time_dependent``: the result can
    change with the clock alone because of a rolling window or a relative date (events
    dated in the future are the other such cause; ``next_change`` covers both).
    """

    event_names: frozenset[str]
    profile_fields: frozenset[str]
    trait_paths: frozenset[tuple[str, ...]]
    time_dependent: bool

    def reads_event(self, name: str) -> bool:
        return name in self.event_names

    def reads_profile_change(
        self, fields: Iterable[str] = (), trait_keys: Iterable[str] = ()
    ) -> bool:
        """Whether changing these columns or these top-level trait keys (traits merge
        shallowly, so a change to ``address`` changes ``address.city``) can change the
        result."""
        if not self.profile_fields.isdisjoint(fields):
            return True
        tops = {path[0] for path in self.trait_paths}
        return not tops.isdisjoint(trait_keys)


def dependencies(rule: Rule) -> Dependencies:
    """Which event names, profile fields and trait paths ``rule`` reads, and whether it
    depends on the time."""
    names: set[str] = set()
    fields: set[str] = set()
    traits: set[tuple[str, ...]] = set()
    timed = False
    for node, in_event in _walk(rule, False):
        if isinstance(node, EventRule):
            names.add(node.name)
            timed = timed or (
                node.frequency is not None and isinstance(node.frequency.period, Rolling)
            )
        elif isinstance(node, Condition):
            timed = timed or isinstance(node.operand, RelativeDate)
            if in_event:
                continue
            if isinstance(node.ref, Field):
                fields.add(node.ref.name)
            else:
                traits.add(node.ref.keys)
    return Dependencies(frozenset(names), frozenset(fields), frozenset(traits), timed)


def _walk(rule: Rule, in_event: bool) -> Iterator[tuple[Rule, bool]]:
    yield rule, in_event
    if isinstance(rule, Wrapper | EventRule):
        inner = in_event or isinstance(rule, EventRule)
        for child in rule.children:
            yield from _walk(child, inner)


def next_change(
    rule: Rule, profile: ProfileFacts, events: Sequence[EventFact], now: int
) -> int | None:
    """The earliest instant after ``now`` at which ``evaluate`` gives another result with
    no new input, or ``None`` if it never will. ``events`` are the same ``evaluate`` gets.

    Exact: every node's result is followed over the instants at which it can change (an
    event coming due or leaving a window, a relative date passing a value), so the cost
    grows with the number of events, not with how often the rule is evaluated.
    """
    _, changes = _timeline(rule, profile, events, now)
    return changes[0][0] if changes else None


# A node's result at ``now`` and then each (instant, new result) at which it changes.
Timeline = tuple[bool, list[tuple[int, bool]]]


def _timeline(rule: Rule, profile: ProfileFacts, events: Sequence[EventFact], now: int) -> Timeline:
    if isinstance(rule, Condition):
        raw = lookup(rule.ref, profile)
        later = sorted({t for t in _flips(rule, raw) if t > now})
        return _changes(
            check_condition(rule, raw, now), [(t, check_condition(rule, raw, t)) for t in later]
        )
    if isinstance(rule, EventRule):
        return _event_timeline(rule, events, now)
    children = [_timeline(child, profile, events, now) for child in rule.children]
    return _combined(rule.operator, children)


def _changes(start: bool, values: Iterable[tuple[int, bool]]) -> Timeline:
    """Only the instants at which the value really changes."""
    changes: list[tuple[int, bool]] = []
    current = start
    for instant, value in values:
        if value != current:
            changes.append((instant, value))
            current = value
    return start, changes


def _combined(operator: Combinator, children: list[Timeline]) -> Timeline:
    values = [start for start, _ in children]
    start = combine(operator, values)
    steps: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for index, (_, changes) in enumerate(children):
        for instant, value in changes:
            steps[instant].append((index, value))
    results = []
    for instant in sorted(steps):
        for index, value in steps[instant]:
            values[index] = value
        results.append((instant, combine(operator, values)))
    return _changes(start, results)


def _event_timeline(rule: EventRule, events: Sequence[EventFact], now: int) -> Timeline:
    """Sweep the instants at which one of the events can start or stop counting: it
    comes due, it leaves the rolling window, a relative date in a condition passes."""
    mine = [event for event in events if event.name == rule.name]
    window = rule.frequency.period if rule.frequency is not None else None
    leaves = [node for node, _ in _walk(rule, True) if isinstance(node, Condition)]
    touches: dict[int, list[int]] = defaultdict(list)
    for index, event in enumerate(mine):
        instants = {event.created_at}
        if isinstance(window, Rolling):
            instants.add(event.created_at + window.length)
        for leaf in leaves:
            instants.update(_flips(leaf, lookup(leaf.ref, event)))
        for instant in instants:
            if instant > now:
                touches[instant].append(index)
    counted = [counts(rule, event, now) for event in mine]
    total = sum(counted)
    start = verdict(rule, total)
    results = []
    for instant in sorted(touches):
        for index in touches[instant]:
            now_counted = counts(rule, mine[index], instant)
            if now_counted != counted[index]:
                total += 1 if now_counted else -1
                counted[index] = now_counted
        results.append((instant, verdict(rule, total)))
    return _changes(start, results)


def _flips(rule: Condition, raw: object) -> Iterator[int]:
    """The instants at which a condition with a relative date can change: the moving
    target (now + offset) reaches the stored value, or the day boundaries around it."""
    operand = rule.operand
    if not isinstance(operand, RelativeDate) or rule.operator in PRESENCE_OPERATORS:
        return
    value = raw if isinstance(rule.ref, Field) else date_value(raw)
    if not isinstance(value, int) or isinstance(value, bool):
        return
    if rule.operator == "is same day":
        day = start_of_day(value)
        yield day - operand.offset
        yield day + DAY - operand.offset
    else:
        yield value - operand.offset
        yield value - operand.offset + 1
