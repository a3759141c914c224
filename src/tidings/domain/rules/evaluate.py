"""Evaluate a rule for one profile and its events at an instant.

The semantics (``docs/segments.md`` says the same for users), shared with the SQL that
``tidings.segments.compile`` writes:

* A value is **missing** when the path does not exist, passes through a non-object, or
  holds JSON ``null``. It has the **wrong type** when it is there but not of the rule's
  type (string: a JSON string; number: a number, not a boolean; boolean: true/false;
  date: see ``dates``; array: a JSON array). Nothing is converted: ``"3"`` is not 3.
* ``is set`` is true when the value is not missing (whatever its type); ``is not set``
  when it is missing. ``empty`` (string, array) is true when the value is missing, ``""``
  or ``[]``, and false for a value of the wrong type.
* Every other operator is **false** on a missing value or one of the wrong type, the
  negative ones too (``!=``, ``not contain``, ``not start with``, array ``none``): "plan
  != pro" does not select profiles without a plan. Use a ``none`` wrapper to negate.
* Strings compare exactly (case-sensitive, code point by code point). Numbers compare as
  double-precision floats (so ``1 = 1.0``). Dates compare in microseconds; ``is same
  day`` means the same UTC calendar day. Array ``any`` is true when an element equals one
  of the values (a string equals a string, a number a number, a boolean a boolean), and
  ``none`` when the array holds none of them.
* Wrappers: ``and`` all children true, ``or`` at least one, ``none`` no child true,
  ``xor`` exactly one. A wrapper with no children is true.
* An event rule looks only at events dated at or before ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.domain.rules.dates import parse_date_text, seconds_to_micros, start_of_day
from tidings.domain.rules.model import (
    DAY,
    AbsoluteDate,
    Combinator,
    Condition,
    DataPath,
    EventRule,
    Field,
    Fixed,
    Frequency,
    Ref,
    RelativeDate,
    Rule,
    Scalar,
    Wrapper,
)

__all__ = [
    "EventFact",
    "ProfileFacts",
    "check_condition",
    "combine",
    "counts",
    "date_value",
    "evaluate",
    "in_period",
    "lookup",
    "resolve_date",
    "verdict",
]


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    """What a user condition can read about a profile. ``created_at`` in microseconds."""

    id: str
    external_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class EventFact:
    """One event of the profile: its name, ``data`` and ``created_at`` (microseconds)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: int = 0


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def evaluate(rule: Rule, profile: ProfileFacts, events: Sequence[EventFact], now: int) -> bool:
    """Whether ``profile`` (with ``events``, all of this profile's events that the rule's
    event rules may count; any order) matches ``rule`` at ``now`` (microseconds)."""
    if isinstance(rule, Condition):
        return check_condition(rule, lookup(rule.ref, profile), now)
    if isinstance(rule, EventRule):
        return _event_rule(rule, events, now)
    return combine(rule.operator, [evaluate(c, profile, events, now) for c in rule.children])


def combine(operator: Combinator, results: Sequence[bool]) -> bool:
    if not results:
        return True
    if operator == "and":
        return all(results)
    if operator == "or":
        return any(results)
    if operator == "none":
        return not any(results)
    return sum(results) == 1


def _event_rule(rule: EventRule, events: Sequence[EventFact], now: int) -> bool:
    return verdict(rule, sum(1 for event in events if counts(rule, event, now)))


def counts(rule: EventRule, event: EventFact, now: int) -> bool:
    """Whether the event rule counts ``event`` at ``now``: its name, it has happened, it
    is in the period, and its data pass the rule's children."""
    if event.name != rule.name or event.created_at > now:
        return False
    if rule.frequency is not None and not in_period(rule.frequency, event.created_at, now):
        return False
    return _event_passes(rule, event, now)


def verdict(rule: EventRule, count: int) -> bool:
    """The event rule's result when it counts ``count`` events."""
    if rule.frequency is None:
        return count >= 1
    return _compare_count(count, rule.frequency)


def _event_passes(rule: EventRule | Wrapper, event: EventFact, now: int) -> bool:
    results = []
    for child in rule.children:
        if isinstance(child, Condition):
            results.append(check_condition(child, lookup(child.ref, event), now))
        elif isinstance(child, Wrapper):
            results.append(_event_passes(child, event, now))
    return combine(rule.operator, results)


def in_period(frequency: Frequency, created_at: int, now: int) -> bool:
    """Whether an event dated ``created_at`` (not after ``now``) is in the period."""
    period = frequency.period
    if isinstance(period, Fixed):
        end = period.end_exclusive
        return period.start.micros <= created_at and (end is None or created_at < end)
    return now - period.length < created_at


def _compare_count(count: int, frequency: Frequency) -> bool:
    n, op = frequency.count, frequency.operator
    if op == "=":
        return count == n
    if op == "<":
        return count < n
    if op == "<=":
        return count <= n
    if op == ">":
        return count > n
    return count >= n


def lookup(ref: Ref, source: ProfileFacts | EventFact) -> Any:
    """The raw value at ``ref``, or ``MISSING``."""
    if isinstance(ref, DataPath):
        value: Any = source.data
        for key in ref.keys:
            if not isinstance(value, Mapping) or key not in value:
                return MISSING
            value = value[key]
    else:
        value = getattr(source, ref.name)
    return MISSING if value is None else value


def resolve_date(operand: AbsoluteDate | RelativeDate, now: int) -> int:
    if isinstance(operand, AbsoluteDate):
        return operand.micros
    return now + operand.offset


def date_value(raw: Any) -> int | None:
    """A raw JSON (or column) value read as a date in microseconds, or ``None``."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        return parse_date_text(raw)
    if isinstance(raw, int | float):
        return seconds_to_micros(raw)
    return None


def _is_number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def check_condition(rule: Condition, raw: Any, now: int) -> bool:
    """A condition on the raw value read at its path (``MISSING`` if there is none)."""
    op = rule.operator
    if op == "is set":
        return raw is not MISSING
    if op == "is not set":
        return raw is MISSING
    if op == "empty":
        if raw is MISSING:
            return True
        if rule.type == "string":
            return isinstance(raw, str) and raw == ""
        return isinstance(raw, list) and not raw
    if raw is MISSING:
        return False
    kind = rule.type
    if kind == "string":
        return isinstance(raw, str) and _string(op, raw, str(rule.operand))
    if kind == "number":
        assert isinstance(rule.operand, int | float)
        return _is_number(raw) and _order(op, float(raw), float(rule.operand))
    if kind == "boolean":
        if not isinstance(raw, bool):
            return False
        return (raw == rule.operand) if op == "=" else (raw != rule.operand)
    if kind == "date":
        # Profile and event created_at are stored as microseconds already.
        value = raw if isinstance(rule.ref, Field) else date_value(raw)
        if value is None:
            return False
        assert isinstance(rule.operand, AbsoluteDate | RelativeDate)
        target = resolve_date(rule.operand, now)
        if op == "is same day":
            day = start_of_day(target)
            return day <= value < day + DAY
        return _order(op, value, target)
    if not isinstance(raw, list):
        return False
    assert isinstance(rule.operand, tuple)
    found = any(_same_scalar(element, wanted) for element in raw for wanted in rule.operand)
    return found if op == "any" else not found


def _string(op: str, value: str, operand: str) -> bool:
    if op == "=":
        return value == operand
    if op == "!=":
        return value != operand
    if op == "contains":
        return operand in value
    if op == "not contain":
        return operand not in value
    if op == "starts with":
        return value.startswith(operand)
    if op == "not start with":
        return not value.startswith(operand)
    return value.endswith(operand)  # ends with


def _order(op: str, value: float, operand: float) -> bool:
    if op == "=":
        return value == operand
    if op == "!=":
        return value != operand
    if op == "<":
        return value < operand
    if op == "<=":
        return value <= operand
    if op == ">":
        return value > operand
    return value >= operand


def _same_scalar(element: Any, wanted: Scalar) -> bool:
    if isinstance(wanted, bool) or isinstance(element, bool):
        return isinstance(wanted, bool) and isinstance(element, bool) and element == wanted
    if isinstance(wanted, str):
        return isinstance(element, str) and element == wanted
    return _is_number(element) and float(element) == float(wanted)
