"""A journey's step graph and settings as values, read from the wire and checked.

Two levels of checking:

* ``parse_steps`` (on ``PUT /journeys/{id}/steps``): the shape of each step (a known type,
  an object ``data``, children that name steps of the graph). A draft may be unfinished.
* ``publish_errors`` (on going ``live``): everything the engine needs to run the graph:
  at least one entrance, every step's required data, paths of gates and waits, no cycle.
  Each error's ``param`` starts with the step's uuid (``<uuid>.data.campaign_id``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.domain.errors import FieldError, InvalidRequest, ValidationFailed
from tidings.domain.rules import parse_rule

__all__ = [
    "RATE_INTERVALS",
    "STEP_TYPES",
    "Child",
    "JourneySettings",
    "Step",
    "duration_micros",
    "parse_settings",
    "parse_steps",
    "publish_errors",
    "step_to_json",
]

STEP_TYPES = (
    "entrance",
    "action",
    "delay",
    "gate",
    "wait",
    "experiment",
    "balancer",
    "throttle",
    "link",
    "update",
    "event",
    "exit",
    "sticky",
)
RATE_INTERVALS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MAX_STEPS = 500
_MAX_UUID = 64
_PATH = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+){0,7}$")
_NO_CHILDREN = ("link", "exit", "sticky")
_MAX_INT = 2**31 - 1  # ids (campaigns, lists, journeys) and rate limits


@dataclass(frozen=True, slots=True)
class Child:
    uuid: str
    path: str | None = None  # "yes" | "no" for gates and waits
    ratio: int | None = None  # experiment weight


@dataclass(frozen=True, slots=True)
class Step:
    uuid: str
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    children: tuple[Child, ...] = ()
    id: int = 0  # the stored integer id (0 until stored)
    name: str | None = None
    data_key: str | None = None
    x: float | None = None
    y: float | None = None

    def child(self, path: str | None = None) -> str | None:
        """The uuid of the child on ``path`` (the first child when ``path`` is None)."""
        for c in self.children:
            if path is None or c.path == path:
                return c.uuid
        return None


@dataclass(frozen=True, slots=True)
class JourneySettings:
    quiet_hours: tuple[int, int, str] | None = None  # (start minute, end minute, hold|skip)
    max_entries_per_user: int | None = None
    frequency_cap: tuple[int, int] | None = None  # (messages, period in microseconds)
    goal: Mapping[str, Any] | None = None  # {event_name, rule?, within (µs)}
    holdout_percent: int = 0


def duration_micros(raw: object, param: str, errors: list[FieldError]) -> int:
    """``{days?, hours?, minutes?, seconds?}`` (at least one, non-negative integers) in µs.
    A bare non-negative integer is read as seconds."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw * 1_000_000
    if not isinstance(raw, Mapping) or not raw:
        errors.append(FieldError(param, "parameter_invalid_format", "must be a duration object"))
        return 0
    total = 0
    for name, value in raw.items():
        unit = _DURATION_UNITS.get(str(name))
        if unit is None:
            errors.append(FieldError(f"{param}.{name}", "parameter_unknown", "not a duration unit"))
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10**6:
            errors.append(
                FieldError(
                    f"{param}.{name}",
                    "parameter_invalid_format",
                    "must be an integer from 0 to 1000000",
                )
            )
            continue
        total += value * unit
    return total * 1_000_000


def _text(raw: object, param: str, errors: list[FieldError], *, limit: int = 255) -> str | None:
    if not isinstance(raw, str) or not raw or len(raw) > limit:
        errors.append(
            FieldError(param, "parameter_invalid_format", f"must be a string of 1 to {limit}")
        )
        return None
    return raw


def parse_steps(raw: object) -> dict[str, Step]:
    """The wire graph ``{uuid: {type, name?, data, data_key?, x?, y?, children}}``; raises
    ``InvalidRequest`` for a shape error and ``ValidationFailed`` listing content errors."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest("The steps must be an object keyed by step uuid.", param="steps")
    if len(raw) > _MAX_STEPS:
        raise ValidationFailed(f"A journey has at most {_MAX_STEPS} steps.", param="steps")
    errors: list[FieldError] = []
    steps: dict[str, Step] = {}
    for uuid, body in raw.items():
        if not isinstance(uuid, str) or not 0 < len(uuid) <= _MAX_UUID:
            errors.append(FieldError(str(uuid)[:80], "parameter_invalid_format", "bad uuid"))
            continue
        if not isinstance(body, Mapping):
            errors.append(FieldError(uuid, "parameter_invalid_format", "must be an object"))
            continue
        kind = body.get("type")
        if kind not in STEP_TYPES:
            errors.append(
                FieldError(
                    f"{uuid}.type",
                    "parameter_invalid_format",
                    f"must be one of {', '.join(STEP_TYPES)}",
                )
            )
            continue
        data = body.get("data", {})
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            errors.append(FieldError(f"{uuid}.data", "parameter_invalid_format", "not an object"))
            continue
        children_raw = body.get("children", [])
        children: list[Child] = []
        if not isinstance(children_raw, list):
            errors.append(FieldError(f"{uuid}.children", "parameter_invalid_format", "not a list"))
            continue
        for i, c in enumerate(children_raw):
            where = f"{uuid}.children[{i}]"
            if not isinstance(c, Mapping) or not isinstance(c.get("external_id"), str):
                errors.append(FieldError(where, "parameter_invalid_format", "needs external_id"))
                continue
            path = c.get("path")
            if path is not None and path not in ("yes", "no"):
                errors.append(FieldError(f"{where}.path", "parameter_invalid_format", "yes|no"))
            ratio = None
            cdata = c.get("data")
            if isinstance(cdata, Mapping) and "ratio" in cdata:
                r = cdata["ratio"]
                if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                    errors.append(
                        FieldError(
                            f"{where}.data.ratio",
                            "parameter_invalid_format",
                            "must be a non-negative integer",
                        )
                    )
                else:
                    ratio = r
            children.append(Child(c["external_id"], path, ratio))
        x, y = body.get("x"), body.get("y")
        name = body.get("name")
        data_key = body.get("data_key")
        steps[uuid] = Step(
            uuid=uuid,
            type=str(kind),
            data=dict(data),
            children=tuple(children),
            name=name if isinstance(name, str) else None,
            data_key=data_key if isinstance(data_key, str) else None,
            x=float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None,
            y=float(y) if isinstance(y, int | float) and not isinstance(y, bool) else None,
        )
    for step in steps.values():
        for i, c in enumerate(step.children):
            if c.uuid not in steps:
                errors.append(
                    FieldError(
                        f"{step.uuid}.children[{i}].external_id",
                        "parameter_invalid_format",
                        f"no step {c.uuid[:80]!r} in this graph",
                    )
                )
    if errors:
        raise ValidationFailed(
            f"Invalid steps: {errors[0].param}: {errors[0].message}",
            param=errors[0].param,
            errors=errors,
        )
    return steps


def _check_step(step: Step, errors: list[FieldError]) -> None:
    u, d = step.uuid, step.data

    def need(name: str) -> Any:
        if d.get(name) in (None, ""):
            errors.append(FieldError(f"{u}.data.{name}", "parameter_missing", "is required"))
            return None
        return d[name]

    def rule(name: str) -> None:
        if d.get(name) is not None:
            try:
                parse_rule(d[name], param=f"{u}.data.{name}")
            except ValidationFailed as exc:
                errors.extend(exc.errors)

    def name(field_name: str) -> None:
        if need(field_name) is not None:
            _text(d[field_name], f"{u}.data.{field_name}", errors)

    def positive_int(name: str) -> None:
        v = need(name)
        if v is not None and (
            not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_INT
        ):
            errors.append(
                FieldError(
                    f"{u}.data.{name}", "parameter_invalid_format", "an integer from 1 to 2^31-1"
                )
            )

    def path(name: str) -> None:
        v = d.get(name)
        if v is not None and (not isinstance(v, str) or not _PATH.match(v)):
            errors.append(
                FieldError(f"{u}.data.{name}", "parameter_invalid_format", "not a data path")
            )

    if step.type == "entrance":
        trigger = d.get("trigger")
        if trigger == "event":
            name("event_name")
            rule("rule")
            path("key")
        elif trigger in ("list", "schedule"):
            positive_int("list_id")
            if trigger == "schedule":
                schedule = need("schedule")
                if schedule is not None:
                    from tidings.domain.journeys.schedule import rrule_error

                    problem = rrule_error(schedule)
                    if problem:
                        errors.append(
                            FieldError(f"{u}.data.schedule", "parameter_invalid_format", problem)
                        )
        elif trigger != "none":
            errors.append(
                FieldError(
                    f"{u}.data.trigger",
                    "parameter_invalid_format",
                    "must be event, list, schedule or none",
                )
            )
    elif step.type == "action":
        positive_int("campaign_id")
    elif step.type == "delay":
        fmt = d.get("format", "duration")
        if fmt == "duration":
            duration_micros(need("duration"), f"{u}.data.duration", errors)
        elif fmt == "time":
            t = need("time")
            if t is not None and (not isinstance(t, str) or not _TIME.match(t)):
                errors.append(FieldError(f"{u}.data.time", "parameter_invalid_format", "HH:MM"))
        elif fmt == "date":
            template = need("date")
            if template is not None:
                from tidings.domain.journeys.templates import template_error

                problem = template_error(template)
                if problem:
                    errors.append(FieldError(f"{u}.data.date", "parameter_invalid_format", problem))
        else:
            errors.append(
                FieldError(f"{u}.data.format", "parameter_invalid_format", "duration|time|date")
            )
    elif step.type == "gate":
        if need("rule") is not None:
            rule("rule")
    elif step.type == "wait":
        if d.get("list_id") is None:
            name("event_name")
            rule("rule")
            path("match")
        else:
            positive_int("list_id")
            if d.get("change", "entered") not in ("entered", "left"):
                errors.append(
                    FieldError(f"{u}.data.change", "parameter_invalid_format", "entered|left")
                )
        duration_micros(need("timeout"), f"{u}.data.timeout", errors)
    elif step.type in ("balancer", "throttle"):
        positive_int("rate_limit")
        if d.get("rate_interval") not in RATE_INTERVALS:
            errors.append(
                FieldError(
                    f"{u}.data.rate_interval",
                    "parameter_invalid_format",
                    "must be second, minute, hour or day",
                )
            )
    elif step.type == "link":
        positive_int("target_id")
    elif step.type in ("update", "event"):
        if step.type == "event":
            name("event_name")
        template = need("template") if step.type == "update" else d.get("template")
        if template is not None:
            from tidings.domain.journeys.templates import template_error

            problem = template_error(template)
            if problem:
                errors.append(FieldError(f"{u}.data.template", "parameter_invalid_format", problem))
    # children
    if step.type in ("gate", "wait"):
        for p in ("yes", "no"):
            if step.child(p) is None:
                errors.append(
                    FieldError(f"{u}.children", "parameter_missing", f"needs a '{p}' child")
                )
    elif step.type == "experiment":
        if not step.children or not any((c.ratio or 0) > 0 for c in step.children):
            errors.append(
                FieldError(
                    f"{u}.children", "parameter_missing", "needs children with data.ratio > 0"
                )
            )
    elif step.type in _NO_CHILDREN and step.children:
        errors.append(FieldError(f"{u}.children", "parameter_invalid_format", "takes no child"))
    elif step.type not in ("balancer",) and len(step.children) > 1:
        errors.append(FieldError(f"{u}.children", "parameter_invalid_format", "takes one child"))


def publish_errors(steps: Mapping[str, Step]) -> list[FieldError]:
    """What stops this graph from going live (empty: it can)."""
    errors: list[FieldError] = []
    if not any(s.type == "entrance" for s in steps.values()):
        errors.append(FieldError("steps", "parameter_missing", "a journey needs an entrance"))
    for step in steps.values():
        _check_step(step, errors)
    # No cycles: each step runs at most once per entrance (the outbox reference of an
    # action is the entrance and the step).
    state: dict[str, int] = {}

    def visit(uuid: str) -> bool:
        state[uuid] = 1
        for c in steps[uuid].children:
            if c.uuid not in steps:
                continue
            s = state.get(c.uuid, 0)
            if s == 1 or (s == 0 and visit(c.uuid)):
                if not errors or errors[-1].code != "cycle":
                    errors.append(
                        FieldError(f"{uuid}.children", "cycle", "the graph has a cycle here")
                    )
                return True
        state[uuid] = 2
        return False

    for uuid in steps:
        if state.get(uuid, 0) == 0 and visit(uuid):
            break
    return errors


def parse_settings(raw: object, param: str = "settings") -> JourneySettings:
    """The journey's ``settings`` object; ``ValidationFailed`` with every problem."""
    if raw is None:
        return JourneySettings()
    if not isinstance(raw, Mapping):
        raise InvalidRequest("settings must be an object.", param=param)
    errors: list[FieldError] = []
    quiet = None
    q = raw.get("quiet_hours")
    if q is not None:
        if not isinstance(q, Mapping):
            errors.append(FieldError(f"{param}.quiet_hours", "parameter_invalid_format", "object"))
        else:
            bounds = []
            for name in ("start", "end"):
                m = _TIME.match(q.get(name) or "") if isinstance(q.get(name), str) else None
                if m is None:
                    errors.append(
                        FieldError(
                            f"{param}.quiet_hours.{name}", "parameter_invalid_format", "HH:MM"
                        )
                    )
                else:
                    bounds.append(int(m.group(1)) * 60 + int(m.group(2)))
            mode = q.get("mode", "hold")
            if mode not in ("hold", "skip"):
                errors.append(
                    FieldError(f"{param}.quiet_hours.mode", "parameter_invalid_format", "hold|skip")
                )
            if len(bounds) == 2 and mode in ("hold", "skip"):
                quiet = (bounds[0], bounds[1], str(mode))
    max_entries = raw.get("max_entries_per_user")
    if max_entries is not None and (
        not isinstance(max_entries, int)
        or isinstance(max_entries, bool)
        or not 1 <= max_entries <= _MAX_INT
    ):
        errors.append(
            FieldError(f"{param}.max_entries_per_user", "parameter_invalid_format", ">= 1")
        )
        max_entries = None
    cap = None
    fc = raw.get("frequency_cap")
    if fc is not None:
        count = fc.get("count") if isinstance(fc, Mapping) else None
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= _MAX_INT:
            errors.append(
                FieldError(f"{param}.frequency_cap.count", "parameter_invalid_format", ">= 1")
            )
        else:
            assert isinstance(fc, Mapping)
            period = duration_micros(fc.get("period"), f"{param}.frequency_cap.period", errors)
            cap = (count, period)
    goal = None
    g = raw.get("goal")
    if g is not None:
        if not isinstance(g, Mapping):
            errors.append(FieldError(f"{param}.goal", "parameter_invalid_format", "object"))
        else:
            goal_event = _text(g.get("event_name"), f"{param}.goal.event_name", errors)
            within = duration_micros(g.get("within"), f"{param}.goal.within", errors)
            if g.get("rule") is not None:
                try:
                    parse_rule(g["rule"], param=f"{param}.goal.rule")
                except ValidationFailed as exc:
                    errors.extend(exc.errors)
            goal = {"event_name": goal_event, "within": within, "rule": g.get("rule")}
    holdout = raw.get("holdout_percent", 0)
    if holdout is None:
        holdout = 0
    if not isinstance(holdout, int) or isinstance(holdout, bool) or not 0 <= holdout <= 100:
        errors.append(
            FieldError(f"{param}.holdout_percent", "parameter_invalid_format", "0 to 100")
        )
        holdout = 0
    unknown = set(raw) - {
        "quiet_hours",
        "max_entries_per_user",
        "frequency_cap",
        "goal",
        "holdout_percent",
    }
    for name in sorted(unknown):
        errors.append(FieldError(f"{param}.{name}", "parameter_unknown", "unknown setting"))
    if errors:
        raise ValidationFailed(
            f"Invalid settings: {errors[0].param}: {errors[0].message}",
            param=errors[0].param,
            errors=errors,
        )
    return JourneySettings(quiet, max_entries, cap, goal, holdout)


def step_to_json(step: Step) -> dict[str, Any]:
    """The wire form of a stored step (with its integer ``id``)."""
    children = []
    for c in step.children:
        child: dict[str, Any] = {"external_id": c.uuid}
        if c.path is not None:
            child["path"] = c.path
        if c.ratio is not None:
            child["data"] = {"ratio": c.ratio}
        children.append(child)
    body: dict[str, Any] = {
        "id": step.id,
        "type": step.type,
        "name": step.name,
        "data": dict(step.data),
        "data_key": step.data_key,
        "x": step.x,
        "y": step.y,
        "children": children,
    }
    return body
