"""Rule JSON → rule tree: validation on write with every problem reported at once.

``parse_rule`` raises ``ValidationFailed`` whose ``errors`` name each problem with a
``param`` pointing into the tree (``rule.children[1].operator``). The way back is
``tidings.domain.rules.encode.rule_to_json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from tidings.domain.errors import FieldError, ValidationFailed
from tidings.domain.rules.dates import MIN_SECONDS, parse_date_text, parse_relative
from tidings.domain.rules.model import (
    COMBINATORS,
    COUNT_OPERATORS,
    EVENT_COLUMNS,
    OPERATORS,
    PRESENCE_OPERATORS,
    PROFILE_COLUMNS,
    UNIT_MICROS,
    UNITS,
    AbsoluteDate,
    Combinator,
    Condition,
    CountOperator,
    DataPath,
    DateOperand,
    EventRule,
    Field,
    Fixed,
    Frequency,
    Operand,
    Ref,
    Rolling,
    Rule,
    Scalar,
    Unit,
    ValueType,
    Wrapper,
)

__all__ = ["LIMITS", "parse_rule"]

#: Bounds that keep a rule (and the SQL compiled from it) a sensible size.
LIMITS = {
    "depth": 8,  # wrapper nesting
    "nodes": 200,  # nodes in one tree
    "text": 1000,  # characters of a string value
    "name": 255,  # characters of an event name, a uuid, a key
    "values": 100,  # values of an array any/none
    "path_keys": 8,  # keys in a data path
    "count": 1_000_000,  # a frequency count
    "span": 100 * 365 * UNIT_MICROS["day"],  # a rolling window or relative offset
}
_TYPES = ("wrapper", "string", "number", "boolean", "date", "array")
_KNOWN = frozenset({"uuid", "type", "group", "path", "operator", "value", "children", "frequency"})
# Parcelvoy's editor also sends these; they carry nothing a rule needs.
_IGNORED = frozenset({"id", "root_uuid", "parent_uuid"})
_KEY_FORBIDDEN = frozenset('."\\[]')


class _Invalid:
    """What a value check returns after recording its error."""


_INVALID = _Invalid()

Scope = Literal["user", "event"]


def parse_rule(raw: object, *, param: str = "rule") -> Rule:
    """Validate a rule tree as JSON-decoded (dicts and lists) and return it as values.

    Raises ``ValidationFailed`` listing every problem found, each as a ``FieldError``
    whose ``param`` starts with ``param`` (``rule.children[0].frequency.count``).
    """
    parser = _Parser()
    rule = parser.node(raw, param, "user", depth=1)
    if parser.errors or rule is None:
        errors = parser.errors or [FieldError(param, "parameter_invalid_format", "invalid rule")]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(
            f"The rule is invalid: {first.param}: {first.message}{more}",
            param=first.param,
            errors=errors,
        )
    return rule


class _Parser:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.uuids: set[str] = set()
        self.nodes = 0

    def fail(self, param: str, message: str, code: str = "parameter_invalid_format") -> None:
        self.errors.append(FieldError(param=param, code=code, message=message))

    # -- nodes ------------------------------------------------------------------------

    def node(self, raw: object, param: str, scope: Scope, *, depth: int) -> Rule | None:
        if not isinstance(raw, Mapping):
            self.fail(param, "a rule must be a JSON object")
            return None
        self.nodes += 1
        if self.nodes == LIMITS["nodes"] + 1:
            self.fail(param, f"a rule may have at most {LIMITS['nodes']} nodes")
        for key in raw:
            if key not in _KNOWN and key not in _IGNORED:
                self.fail(f"{param}.{key}", f"unknown field '{key}'", "parameter_unknown")
        uuid = self.uuid(raw.get("uuid"), f"{param}.uuid")
        kind = raw.get("type")
        if kind is None:
            self.fail(f"{param}.type", "type is required", "parameter_missing")
            return None
        if kind not in _TYPES:
            self.fail(f"{param}.type", f"type must be one of {', '.join(_TYPES)}")
            return None
        if kind == "wrapper":
            return self.wrapper(raw, param, scope, uuid, depth=depth)
        return self.condition(raw, param, scope, kind, uuid)

    def uuid(self, raw: object, param: str) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw or len(raw) > LIMITS["name"]:
            self.fail(param, f"uuid must be a non-empty string of at most {LIMITS['name']}")
            return None
        if raw in self.uuids:
            self.fail(param, f"uuid '{raw}' appears twice in the rule")
        self.uuids.add(raw)
        return raw

    def wrapper(
        self, raw: Mapping[str, Any], param: str, scope: Scope, uuid: str | None, *, depth: int
    ) -> Rule | None:
        group = raw.get("group")
        path = raw.get("path")
        operator = self.combinator(raw.get("operator"), f"{param}.operator")
        is_event = group == "event" and path in ("name", "$.name")
        if group is None:
            self.fail(f"{param}.group", "group is required", "parameter_missing")
        elif group not in ("user", "event", "parent"):
            self.fail(f"{param}.group", "group must be one of user, event, parent")
        elif scope == "user" and group == "event" and not is_event:
            self.fail(f"{param}.path", "an event rule's path must be 'name'")
        elif scope == "event" and is_event:
            self.fail(f"{param}.path", "an event rule cannot be inside another event rule")
        elif scope == "event" and group == "user":
            self.fail(
                f"{param}.group",
                "conditions inside an event rule read the event: group must be event",
            )
        if path is not None and not isinstance(path, str):
            self.fail(f"{param}.path", "path must be a string")
            path = None
        if depth > LIMITS["depth"]:
            self.fail(param, f"rules may be nested at most {LIMITS['depth']} deep")
            return None
        inner: Scope = "event" if is_event or scope == "event" else "user"
        children = self.children(raw.get("children"), param, inner, depth=depth)
        if scope == "user" and is_event:
            name = raw.get("value")
            if not isinstance(name, str) or not name.strip():
                code = "parameter_missing" if name is None else "parameter_invalid_format"
                self.fail(
                    f"{param}.value", "the event name (value) must be a non-empty string", code
                )
            elif len(name) > LIMITS["name"]:
                self.fail(
                    f"{param}.value", f"an event name has at most {LIMITS['name']} characters"
                )
            frequency = None
            if raw.get("frequency") is not None:
                frequency = self.frequency(raw["frequency"], f"{param}.frequency")
            if operator is None or children is None or not isinstance(name, str):
                return None
            return EventRule(
                name=name,
                operator=operator,
                children=children,
                frequency=frequency,
                path=str(path),
                uuid=uuid,
            )
        if raw.get("frequency") is not None:
            self.fail(
                f"{param}.frequency", "only an event rule (group event, path name) has a frequency"
            )
        if raw.get("value") is not None and not is_event:
            self.fail(f"{param}.value", "a wrapper has no value; its children hold the conditions")
        if operator is None or children is None or group not in ("user", "event", "parent"):
            return None
        return Wrapper(operator=operator, children=children, group=group, path=path, uuid=uuid)

    def combinator(self, raw: object, param: str) -> Combinator | None:
        for operator in COMBINATORS:
            if raw == operator:
                return operator
        if raw is None:
            self.fail(param, "operator is required", "parameter_missing")
        else:
            self.fail(param, f"a wrapper's operator must be one of {', '.join(COMBINATORS)}")
        return None

    def children(
        self, raw: object, param: str, scope: Scope, *, depth: int
    ) -> tuple[Rule, ...] | None:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.fail(f"{param}.children", "children must be a list of rules")
            return None
        parsed = [
            self.node(child, f"{param}.children[{i}]", scope, depth=depth + 1)
            for i, child in enumerate(raw)
        ]
        if any(child is None for child in parsed):
            return None
        return tuple(child for child in parsed if child is not None)

    def condition(
        self, raw: Mapping[str, Any], param: str, scope: Scope, kind: ValueType, uuid: str | None
    ) -> Condition | None:
        group = raw.get("group")
        if group is None:
            self.fail(f"{param}.group", "group is required", "parameter_missing")
        elif group != scope:
            where = "inside an event rule" if scope == "event" else "outside an event rule"
            self.fail(f"{param}.group", f"a condition {where} must have group {scope}")
        if raw.get("children"):
            self.fail(f"{param}.children", "only a wrapper has children")
        if raw.get("frequency") is not None:
            self.fail(f"{param}.frequency", "only an event rule has a frequency")
        ref = self.path(raw.get("path"), f"{param}.path", scope, kind)
        operator = raw.get("operator")
        allowed = OPERATORS[kind]
        if operator is None:
            self.fail(f"{param}.operator", "operator is required", "parameter_missing")
            return None
        if operator not in allowed:
            quoted = ", ".join(f"'{x}'" for x in allowed)
            self.fail(f"{param}.operator", f"a {kind} rule's operator must be one of {quoted}")
            return None
        operand = self.operand(raw.get("value"), f"{param}.value", kind, str(operator))
        if ref is None or isinstance(operand, _Invalid) or group != scope:
            return None
        return Condition(
            type=kind,
            group=scope,
            path=str(raw["path"]),
            ref=ref,
            operator=str(operator),
            operand=operand,
            uuid=uuid,
        )

    # -- paths and values ---------------------------------------------------------------

    def path(self, raw: object, param: str, scope: Scope, kind: str) -> Ref | None:
        if raw is None:
            self.fail(param, "path is required", "parameter_missing")
            return None
        if not isinstance(raw, str) or not raw.strip():
            self.fail(param, "path must be a non-empty string", "parameter_invalid_empty")
            return None
        columns = PROFILE_COLUMNS if scope == "user" else EVENT_COLUMNS
        jsonpath = raw.startswith("$.")
        body = raw[2:] if jsonpath else raw
        if body in columns:
            if columns[body] != kind:
                self.fail(param, f"'{body}' is a {columns[body]} field: use type {columns[body]}")
                return None
            return Field(body)
        if body.startswith("data.") and not jsonpath:
            body = body[5:]
        elif not jsonpath:
            known = ", ".join(columns)
            self.fail(
                param,
                f"'{raw}' is not a field ({known}); address data as data.{raw} or $.{raw}",
            )
            return None
        keys = tuple(body.split("."))
        if len(keys) > LIMITS["path_keys"]:
            self.fail(param, f"a data path has at most {LIMITS['path_keys']} keys")
            return None
        for key in keys:
            if not key or len(key) > LIMITS["name"] or _KEY_FORBIDDEN & set(key):
                self.fail(
                    param,
                    f"'{raw}' is not a valid path: keys are separated by '.', are not empty "
                    'and hold none of . " \\ [ ]',
                )
                return None
            if any(ord(c) < 32 for c in key):
                self.fail(param, f"'{raw}' holds a control character")
                return None
        return DataPath(keys)

    def operand(self, raw: object, param: str, kind: str, operator: str) -> Operand | _Invalid:
        if operator in PRESENCE_OPERATORS or operator == "empty":
            return None  # a value sent with these (editors send "") means nothing
        if raw is None:
            self.fail(param, f"'{operator}' needs a value", "parameter_missing")
            return _INVALID
        if kind == "string":
            if not isinstance(raw, str):
                self.fail(param, "a string rule's value must be a string")
                return _INVALID
            if len(raw) > LIMITS["text"]:
                self.fail(param, f"a value has at most {LIMITS['text']} characters")
                return _INVALID
            if "\x00" in raw:
                self.fail(param, "a value cannot hold the NUL character")
                return _INVALID
            return raw
        if kind == "number":
            if not _is_number(raw):
                self.fail(param, "a number rule's value must be a finite JSON number")
                return _INVALID
            return raw  # type: ignore[return-value]
        if kind == "boolean":
            if not isinstance(raw, bool):
                self.fail(param, "a boolean rule's value must be true or false")
                return _INVALID
            return raw
        if kind == "date":
            date = self.date(raw, param, relative=True)
            return _INVALID if date is None else date
        return self.scalars(raw, param)

    def date(self, raw: object, param: str, *, relative: bool) -> DateOperand | None:
        if isinstance(raw, str):
            micros = parse_date_text(raw)
            if micros is not None and micros >= MIN_SECONDS * 1_000_000:
                return AbsoluteDate(text=raw, micros=micros, date_only=len(raw) == 10)
            moved = parse_relative(raw) if relative else None
            if moved is not None:
                if abs(moved.offset) > LIMITS["span"]:
                    self.fail(param, "a relative date reaches at most 100 years")
                    return None
                return moved
        hint = " or a relative date such as '30 days ago', 'in 2 weeks', 'now'" if relative else ""
        self.fail(
            param, f"expected an ISO-8601 date such as 2024-05-01 or 2024-05-01T09:30:00Z{hint}"
        )
        return None

    def scalars(self, raw: object, param: str) -> tuple[Scalar, ...] | _Invalid:
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            self.fail(param, "give at least one value", "parameter_invalid_empty")
            return _INVALID
        if len(values) > LIMITS["values"]:
            self.fail(param, f"at most {LIMITS['values']} values")
            return _INVALID
        scalars: list[Scalar] = []
        for i, value in enumerate(values):
            where = f"{param}[{i}]" if isinstance(raw, list) else param
            if isinstance(value, str) and (len(value) > LIMITS["text"] or "\x00" in value):
                self.fail(where, f"a value has at most {LIMITS['text']} characters and no NUL")
            elif isinstance(value, str | bool) or (
                isinstance(value, int | float) and _is_number(value)
            ):
                scalars.append(value)
            else:
                self.fail(where, "array values must be strings, finite numbers or booleans")
        return tuple(scalars) if len(scalars) == len(values) else _INVALID

    def frequency(self, raw: object, param: str) -> Frequency | None:
        if not isinstance(raw, Mapping):
            self.fail(param, "frequency must be an object {period, operator, count}")
            return None
        for key in raw:
            if key not in ("period", "operator", "count"):
                self.fail(f"{param}.{key}", f"unknown field '{key}'", "parameter_unknown")
        period = self.period(raw.get("period"), f"{param}.period")
        operator: CountOperator | None = None
        for candidate in COUNT_OPERATORS:
            if raw.get("operator") == candidate:
                operator = candidate
        if operator is None:
            missing = raw.get("operator") is None
            self.fail(
                f"{param}.operator",
                f"operator must be one of {', '.join(COUNT_OPERATORS)}",
                "parameter_missing" if missing else "parameter_invalid_format",
            )
        count = raw.get("count")
        if count is None:
            self.fail(f"{param}.count", "count is required", "parameter_missing")
        elif (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 <= count <= LIMITS["count"]
        ):
            self.fail(f"{param}.count", f"count must be a whole number from 0 to {LIMITS['count']}")
            count = None
        if period is None or operator is None or count is None:
            return None
        return Frequency(period=period, operator=operator, count=count)

    def period(self, raw: object, param: str) -> Rolling | Fixed | None:
        if raw is None:
            self.fail(param, "period is required", "parameter_missing")
            return None
        if not isinstance(raw, Mapping):
            self.fail(param, "period must be an object")
            return None
        kind = raw.get("type")
        if kind == "rolling":
            allowed = ("type", "unit", "value")
        elif kind == "fixed":
            allowed = ("type", "start_date", "end_date")
        else:
            code = "parameter_missing" if kind is None else "parameter_invalid_format"
            self.fail(f"{param}.type", "period type must be rolling or fixed", code)
            return None
        for key in raw:
            if key not in allowed:
                self.fail(
                    f"{param}.{key}",
                    f"unknown field '{key}' for a {kind} period",
                    "parameter_unknown",
                )
        if kind == "rolling":
            unit: Unit | None = None
            for candidate in UNITS:
                if raw.get("unit") == candidate:
                    unit = candidate
            if unit is None:
                code = (
                    "parameter_missing" if raw.get("unit") is None else "parameter_invalid_format"
                )
                self.fail(f"{param}.unit", f"unit must be one of {', '.join(UNITS)}", code)
            value = raw.get("value")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                code = "parameter_missing" if value is None else "parameter_invalid_format"
                self.fail(f"{param}.value", "value must be a whole number of at least 1", code)
                return None
            if unit is None:
                return None
            if value * UNIT_MICROS[unit] > LIMITS["span"]:
                self.fail(f"{param}.value", "a rolling period is at most 100 years long")
                return None
            return Rolling(unit=unit, value=value)
        start_raw = raw.get("start_date")
        if start_raw is None:
            self.fail(f"{param}.start_date", "start_date is required", "parameter_missing")
            start = None
        else:
            start = self.date(start_raw, f"{param}.start_date", relative=False)
        end = None
        if raw.get("end_date") is not None:
            end = self.date(raw["end_date"], f"{param}.end_date", relative=False)
            if end is None:
                return None
        if not isinstance(start, AbsoluteDate) or (
            end is not None and not isinstance(end, AbsoluteDate)
        ):
            return None
        fixed = Fixed(start=start, end=end)
        end_exclusive = fixed.end_exclusive
        if end_exclusive is not None and end_exclusive <= start.micros:
            self.fail(f"{param}.end_date", "end_date is before start_date")
            return None
        return fixed


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < 2**63
    )
