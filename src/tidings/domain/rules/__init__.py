"""Segment rules: one rule tree, read from JSON, evaluated in Python or compiled to SQL.

The public API::

    rule = parse_rule(raw)                     # validate JSON; ValidationFailed with errors
    rule_to_json(rule)                         # canonical JSON back
    evaluate(rule, profile, events, now)       # bool, for one profile at ``now`` (µs)
    dependencies(rule)                         # event names, fields, traits, time
    next_change(rule, profile, events, now)    # µs when the clock alone flips it, or None

``tidings.segments.compile.compile_rule`` turns the same tree into SQL with the same
semantics; ``docs/segments.md`` describes the format and the semantics for users.
"""

from tidings.domain.rules.encode import rule_to_json
from tidings.domain.rules.evaluate import EventFact, ProfileFacts, evaluate
from tidings.domain.rules.model import (
    AbsoluteDate,
    Condition,
    DataPath,
    EventRule,
    Field,
    Fixed,
    Frequency,
    RelativeDate,
    Rolling,
    Rule,
    Wrapper,
)
from tidings.domain.rules.parse import parse_rule
from tidings.domain.rules.timing import Dependencies, dependencies, next_change

__all__ = [
    "AbsoluteDate",
    "Condition",
    "DataPath",
    "Dependencies",
    "EventFact",
    "EventRule",
    "Field",
    "Fixed",
    "Frequency",
    "ProfileFacts",
    "RelativeDate",
    "Rolling",
    "Rule",
    "Wrapper",
    "dependencies",
    "evaluate",
    "next_change",
    "parse_rule",
    "rule_to_json",
]
