"""What one step does for one entrance: ``decide(step, context, now) -> Decision``.

Pure: the engine (``tidings.journeys.engine``) loads what a step needs into ``Context``
(the profile, its events for a gate, messages sent for a frequency cap, rate counts),
calls ``decide``, then applies the ``Decision``'s effects, its timer or wait and the move
to the next step, all in one transaction. A step held by a timer (a delay, quiet hours, a
throttle) is decided again when the timer fires; ``arrived_at`` (when the entrance reached
the step) keeps the answer the same however often it is asked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.domain.journeys.graph import RATE_INTERVALS, JourneySettings, Step, duration_micros
from tidings.domain.journeys.templates import TemplateFailed, render_json, render_text
from tidings.domain.rules import EventFact, ProfileFacts, Rule, evaluate, parse_rule
from tidings.domain.rules.evaluate import date_value

__all__ = [
    "Context",
    "Decision",
    "Emit",
    "ExitEntrance",
    "LinkTo",
    "Send",
    "UpdateTraits",
    "WaitFor",
    "bucket",
    "decide",
    "event_passes",
    "in_holdout",
    "lookup_path",
    "wait_matches",
    "zone",
]

SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class Send:
    campaign_id: int


@dataclass(frozen=True, slots=True)
class Emit:
    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateTraits:
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExitEntrance:
    entrance_uuid: str | None  # None: this entrance


@dataclass(frozen=True, slots=True)
class LinkTo:
    journey_id: int
    entrance_uuid: str | None


@dataclass(frozen=True, slots=True)
class WaitFor:
    timeout_at: int
    event_name: str | None = None
    rule: Any = None
    match_path: str | None = None
    list_id: int | None = None
    change: str = "entered"


Effect = Send | Emit | UpdateTraits | ExitEntrance | LinkTo


@dataclass(frozen=True, slots=True)
class Decision:
    """``hold_until``: run this step again then; ``wait``: wait for an event or a list
    change; else the step is done with ``outcome`` and the entrance goes to ``next`` (or
    ends when ``next`` is None)."""

    outcome: str = "completed"
    next: str | None = None
    effects: tuple[Effect, ...] = ()
    hold_until: int | None = None
    wait: WaitFor | None = None
    count_rate: str | None = None  # a balancer's chosen child ('' for a throttle)
    branch: str | None = None  # an experiment's chosen child
    failed: str | None = None  # why the step failed (the entrance ends, failed)


@dataclass(frozen=True, slots=True)
class Context:
    project_id: int
    journey_id: int
    entrance_id: int
    profile: ProfileFacts
    arrived_at: int  # µs, when the entrance reached this step
    timezone: str  # the user's, else the project's
    event: Mapping[str, Any] = field(default_factory=dict)  # the entering event
    settings: JourneySettings = field(default_factory=JourneySettings)
    holdout: bool = False
    events: Sequence[EventFact] = ()  # the profile's events, for a gate's event rules
    sent_count: int | None = None  # messages sent within the frequency cap's period
    rate_counts: Mapping[str, int] = field(default_factory=dict)  # this window, by child
    resumed: str | None = None  # "yes" | "no" when a wait ended


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def bucket(*parts: object) -> int:
    """A stable number in [0, 10000) from ``parts``: the same entrance draws the same."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def in_holdout(journey_id: int, profile_id: str, percent: int) -> bool:
    """A user is in a journey's holdout for every one of its entrances alike."""
    return percent > 0 and bucket("holdout", journey_id, profile_id) < percent * 100


def lookup_path(source: Mapping[str, Any], path: str) -> Any:
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def roots(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    user = {
        "id": p.id,
        "external_id": p.external_id,
        "email": p.email,
        "phone": p.phone,
        "timezone": p.timezone,
        "locale": p.locale,
        "data": dict(p.data),
        **{k: v for k, v in p.data.items() if isinstance(k, str)},
    }
    return {
        "user": user,
        "event": dict(ctx.event.get("data") or {}),
        "journey": {"id": ctx.journey_id, "entrance_id": ctx.entrance_id},
    }


def _local(at: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at / SECOND, tz)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * SECOND + moment.microsecond


def _next_time_of_day(after: int, hour: int, minute: int, tz: ZoneInfo) -> int:
    local = _local(after, tz)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        target = (target + timedelta(days=1)).replace(hour=hour, minute=minute)
    return _micros(target)


def _quiet_until(now: int, quiet: tuple[int, int, str], tz: ZoneInfo) -> int | None:
    """When quiet hours end, if ``now`` is in them (windows may span midnight)."""
    start, end, _ = quiet
    local = _local(now, tz)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start <= end else (minute >= start or minute < end)
    if not inside or start == end:
        return None
    return _next_time_of_day(now, end // 60, end % 60, tz)


def _delay(step: Step, ctx: Context, now: int) -> Decision:
    d = step.data
    fmt = d.get("format", "duration")
    tz = zone(ctx.profile.timezone, ctx.timezone)
    if fmt == "time":
        hour, minute = (int(x) for x in str(d["time"]).split(":"))
        due = _next_time_of_day(ctx.arrived_at, hour, minute, tz)
    elif fmt == "date":
        try:
            text = render_text(str(d["date"]), roots(ctx)).strip()
        except TemplateFailed as exc:
            return Decision(outcome="failed", failed=f"date template: {exc}")
        when = date_value(text)
        if when is None:
            return Decision(outcome="failed", failed=f"date template gave {text[:60]!r}")
        due = when
    else:
        due = ctx.arrived_at + duration_micros(d.get("duration"), "duration", [])
    if now < due:
        return Decision(hold_until=due)
    return Decision(next=step.child())


def _gate(step: Step, ctx: Context, now: int) -> Decision:
    rule = parsed_rule(step.data["rule"])
    data = {**ctx.profile.data, "journey": roots(ctx)["journey"] | {"event": roots(ctx)["event"]}}
    p = ctx.profile
    facts = ProfileFacts(
        id=p.id,
        external_id=p.external_id,
        email=p.email,
        phone=p.phone,
        timezone=p.timezone,
        locale=p.locale,
        data=data,
        created_at=p.created_at,
    )
    path = "yes" if evaluate(rule, facts, ctx.events, now) else "no"
    return Decision(outcome=path, next=step.child(path))


def _wait(step: Step, ctx: Context, now: int) -> Decision:
    if ctx.resumed is not None:
        return Decision(outcome=ctx.resumed, next=step.child(ctx.resumed))
    d = step.data
    timeout_at = ctx.arrived_at + duration_micros(d.get("timeout"), "timeout", [])
    if now >= timeout_at:
        return Decision(outcome="no", next=step.child("no"))
    if d.get("list_id") is not None:
        wait = WaitFor(
            timeout_at, list_id=int(d["list_id"]), change=str(d.get("change", "entered"))
        )
    else:
        wait = WaitFor(
            timeout_at,
            event_name=str(d["event_name"]),
            rule=d.get("rule"),
            match_path=d.get("match"),
        )
    return Decision(wait=wait)


def _action(step: Step, ctx: Context, now: int) -> Decision:
    s = ctx.settings
    if s.quiet_hours is not None:
        until = _quiet_until(now, s.quiet_hours, zone(ctx.profile.timezone, ctx.timezone))
        if until is not None:
            if s.quiet_hours[2] == "hold":
                return Decision(hold_until=until)
            return Decision(outcome="skipped_quiet_hours", next=step.child())
    if ctx.holdout:
        return Decision(outcome="holdout", next=step.child())
    if s.frequency_cap is not None and (ctx.sent_count or 0) >= s.frequency_cap[0]:
        return Decision(outcome="frequency_capped", next=step.child())
    return Decision(
        outcome="sent", next=step.child(), effects=(Send(int(step.data["campaign_id"])),)
    )


def window_start(step: Step, now: int) -> int:
    length = RATE_INTERVALS[str(step.data["rate_interval"])] * SECOND
    return now - now % length


def _rate(step: Step, ctx: Context, now: int) -> Decision:
    limit = int(step.data["rate_limit"])
    if step.type == "throttle":
        if ctx.rate_counts.get("", 0) >= limit:
            length = RATE_INTERVALS[str(step.data["rate_interval"])] * SECOND
            return Decision(hold_until=window_start(step, now) + length)
        return Decision(next=step.child(), count_rate="")
    # balancer: the child with the fewest entrances in this window, while any is below
    # the limit; when all are full, wait for the next window.
    counts = [(ctx.rate_counts.get(c.uuid, 0), i, c.uuid) for i, c in enumerate(step.children)]
    if not counts:
        return Decision()
    fewest = min(counts)
    if fewest[0] >= limit:
        length = RATE_INTERVALS[str(step.data["rate_interval"])] * SECOND
        return Decision(hold_until=window_start(step, now) + length)
    return Decision(outcome=fewest[2], next=fewest[2], count_rate=fewest[2])


def _experiment(step: Step, ctx: Context) -> Decision:
    weighted = [(c.ratio or 0, c.uuid) for c in step.children if (c.ratio or 0) > 0]
    total = sum(w for w, _ in weighted)
    if not total:
        return Decision()
    draw = bucket("experiment", ctx.entrance_id, step.uuid) * total // 10_000
    for weight, uuid in weighted:
        if draw < weight:
            return Decision(outcome=uuid, next=uuid, branch=uuid)
        draw -= weight
    return Decision(outcome=weighted[-1][1], next=weighted[-1][1], branch=weighted[-1][1])


def decide(step: Step, ctx: Context, now: int) -> Decision:
    """What ``step`` does for the entrance described by ``ctx`` at ``now`` (µs)."""
    kind = step.type
    if kind == "entrance":
        return Decision(next=step.child())
    if kind == "action":
        return _action(step, ctx, now)
    if kind == "delay":
        return _delay(step, ctx, now)
    if kind == "gate":
        return _gate(step, ctx, now)
    if kind == "wait":
        return _wait(step, ctx, now)
    if kind == "experiment":
        return _experiment(step, ctx)
    if kind in ("balancer", "throttle"):
        return _rate(step, ctx, now)
    if kind == "link":
        target = LinkTo(int(step.data["target_id"]), step.data.get("entrance_id"))
        return Decision(effects=(target,))
    if kind == "exit":
        return Decision(effects=(ExitEntrance(step.data.get("entrance_id")),))
    if kind == "update":
        try:
            traits = render_json(str(step.data["template"]), roots(ctx))
        except TemplateFailed as exc:
            return Decision(outcome="failed", failed=f"update template: {exc}")
        return Decision(next=step.child(), effects=(UpdateTraits(traits),))
    if kind == "event":
        data: dict[str, Any] = {}
        if step.data.get("template"):
            try:
                data = render_json(str(step.data["template"]), roots(ctx))
            except TemplateFailed as exc:
                return Decision(outcome="failed", failed=f"event template: {exc}")
        return Decision(next=step.child(), effects=(Emit(str(step.data["event_name"]), data),))
    return Decision(next=step.child())  # sticky notes never run; pass through


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Rule:
    return parse_rule(json.loads(text))


def parsed_rule(rule: Any) -> Rule:
    """``parse_rule``, remembered by the rule's JSON (rules run for every event)."""
    return _parsed(json.dumps(rule, sort_keys=True))


def event_passes(rule: Any, profile: ProfileFacts, event: EventFact, now: int) -> bool:
    """An entrance's or a wait's optional ``rule``, read over the profile with this one
    event as its only event (so an event rule on the event's name tests its data)."""
    if rule is None:
        return True
    return evaluate(parsed_rule(rule), profile, [event], now)


def wait_matches(
    wait: WaitFor, entering: Mapping[str, Any], profile: ProfileFacts, event: EventFact, now: int
) -> bool:
    """Whether ``event`` ends a wait for an event (name, key path, rule)."""
    if wait.event_name != event.name:
        return False
    if wait.match_path:
        path = wait.match_path.removeprefix("data.")
        wanted = lookup_path(entering.get("data") or {}, path)
        if wanted is None or lookup_path(event.data, path) != wanted:
            return False
    return event_passes(wait.rule, profile, event, now)
