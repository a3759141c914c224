"""Rule tree → canonical JSON: ``parse_rule(rule_to_json(r)) == r`` for every parsed rule.

Canonical means: relative dates in their canonical spelling (``30 days ago``), array
values as lists, no ``value`` for ``is set``/``is not set``/``empty``, and none of the
fields Parcelvoy's editor adds (``id``, ``root_uuid``, ``parent_uuid``).
"""

from __future__ import annotations

from typing import Any

from tidings.domain.rules.model import (
    AbsoluteDate,
    Condition,
    EventRule,
    Frequency,
    Operand,
    RelativeDate,
    Rolling,
    Rule,
)

__all__ = ["rule_to_json"]


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The canonical JSON of a rule tree (plain dicts and lists, ready to encode)."""
    out: dict[str, Any] = {}
    if rule.uuid is not None:
        out["uuid"] = rule.uuid
    if isinstance(rule, Condition):
        out.update(type=rule.type, group=rule.group, path=rule.path, operator=rule.operator)
        if rule.operand is not None:
            out["value"] = _operand_json(rule.operand)
        return out
    if isinstance(rule, EventRule):
        out.update(type="wrapper", group="event", path=rule.path, operator=rule.operator)
        out["value"] = rule.name
        out["children"] = [rule_to_json(child) for child in rule.children]
        if rule.frequency is not None:
            out["frequency"] = _frequency_json(rule.frequency)
        return out
    out.update(type="wrapper", group=rule.group)
    if rule.path is not None:
        out["path"] = rule.path
    out["operator"] = rule.operator
    out["children"] = [rule_to_json(child) for child in rule.children]
    return out


def _operand_json(operand: Operand) -> Any:
    if isinstance(operand, AbsoluteDate | RelativeDate):
        return operand.text
    if isinstance(operand, tuple):
        return list(operand)
    return operand


def _frequency_json(frequency: Frequency) -> dict[str, Any]:
    period = frequency.period
    if isinstance(period, Rolling):
        body: dict[str, Any] = {"type": "rolling", "unit": period.unit, "value": period.value}
    else:
        body = {"type": "fixed", "start_date": period.start.text}
        if period.end is not None:
            body["end_date"] = period.end.text
    return {"period": body, "operator": frequency.operator, "count": frequency.count}
