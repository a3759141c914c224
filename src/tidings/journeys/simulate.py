"""A dry run: the path one user would take through a journey, and the messages it would
send, on a virtual clock, given a list of timed events. It reads the journey and the user
and writes nothing: the same ``decide`` as the engine, with time moved by hand.

Body: ``{external_id?, user?: {…profile fields, data?}, events?: [{name, data?, at}],
entrance_id?, until?: duration}``. ``at`` is seconds after the start (or an RFC 3339
time). The user enters at the first event that an event entrance takes, or at the start
for other entrances. The run ends when the path ends, or at ``until`` (default 90 days)
after the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tidings.domain.errors import FieldError, InvalidRequest, NotFound, ValidationFailed
from tidings.domain.fields import parse_timestamp
from tidings.domain.journeys import (
    Context,
    Emit,
    ExitEntrance,
    LinkTo,
    Send,
    Step,
    UpdateTraits,
    decide,
    duration_micros,
    event_passes,
    in_holdout,
    wait_matches,
)
from tidings.domain.rules import EventFact, ProfileFacts
from tidings.journeys.graphs import JourneyRow, load_graph
from tidings.store.tables import identities, profiles, projects

__all__ = ["simulate"]

_MAX_EVENTS = 1000
_DEFAULT_UNTIL = 90 * 86400 * 1_000_000
_MAX_AT = 10 * 365 * 86400  # seconds after the start


def iso(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _events(raw: object, start: int) -> list[EventFact]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > _MAX_EVENTS:
        raise InvalidRequest(f"events must be a list of at most {_MAX_EVENTS}.", param="events")
    errors: list[FieldError] = []
    out = []
    for i, e in enumerate(raw):
        where = f"events[{i}]"
        if not isinstance(e, Mapping) or not isinstance(e.get("name"), str) or not e["name"]:
            errors.append(FieldError(f"{where}.name", "parameter_missing", "needs a name"))
            continue
        at = e.get("at", 0)
        if isinstance(at, int | float) and not isinstance(at, bool) and 0 <= at <= _MAX_AT:
            when = start + int(at * 1_000_000)
        elif isinstance(at, str):
            try:
                when = parse_timestamp(at)
            except ValueError as exc:
                errors.append(FieldError(f"{where}.at", "parameter_invalid_format", str(exc)))
                continue
        else:
            errors.append(
                FieldError(
                    f"{where}.at",
                    "parameter_invalid_format",
                    "seconds (up to 10 years) or RFC 3339",
                )
            )
            continue
        data = e.get("data") or {}
        if not isinstance(data, Mapping):
            errors.append(FieldError(f"{where}.data", "parameter_invalid_format", "an object"))
            continue
        out.append(EventFact(e["name"], dict(data), when))
    if errors:
        raise ValidationFailed(
            f"{errors[0].param}: {errors[0].message}", param=errors[0].param, errors=errors
        )
    return sorted(out, key=lambda f: f.created_at)


def _profile(reader: Engine, project_id: int, body: Mapping[str, Any]) -> ProfileFacts:
    external_id = body.get("external_id")
    user = body.get("user")
    if user is not None and not isinstance(user, Mapping):
        raise InvalidRequest("user must be an object.", param="user")
    if external_id is None and isinstance(user, Mapping):
        external_id = user.get("external_id")
    stored: Any = None
    if isinstance(external_id, str) and external_id:
        with reader.connect() as conn:
            stored = conn.execute(
                sa.select(profiles)
                .select_from(profiles.join(identities, identities.c.profile_id == profiles.c.id))
                .where(
                    identities.c.project_id == project_id,
                    identities.c.kind == "external",
                    identities.c.value == external_id,
                )
            ).first()
        if stored is None and user is None:
            raise NotFound(f"No user with external_id '{external_id}'.", param="external_id")
    elif user is None:
        raise InvalidRequest(
            "Give external_id (a stored user) or user (a user to imagine).",
            code="parameter_missing",
            param="external_id",
        )
    given = dict(user or {})
    data = dict(stored.data or {}) if stored is not None else {}
    if isinstance(given.get("data"), Mapping):
        data.update(given["data"])

    def pick(name: str) -> Any:
        value = given.get(name)
        return value if value is not None else (getattr(stored, name) if stored else None)

    return ProfileFacts(
        id=stored.id if stored is not None else "simulated",
        external_id=external_id if isinstance(external_id, str) else None,
        email=pick("email"),
        phone=pick("phone"),
        timezone=pick("timezone"),
        locale=pick("locale"),
        data=data,
        created_at=stored.created_at if stored is not None else 0,
    )


def simulate(
    reader: Engine, journey: JourneyRow, body: Mapping[str, Any], *, now: int
) -> dict[str, Any]:
    for name in body:
        if name not in ("external_id", "user", "events", "entrance_id", "until"):
            raise InvalidRequest(f"Unknown field '{name}'.", code="parameter_unknown", param=name)
    with reader.connect() as conn:
        graph = load_graph(conn, journey.id)
        tz = (
            conn.execute(
                sa.select(projects.c.timezone).where(projects.c.id == journey.project_id)
            ).scalar_one_or_none()
            or "UTC"
        )
    if graph is None:
        raise NotFound(f"No journey with id {journey.id}.", param="id")
    start = now
    events = _events(body.get("events"), start)
    errors: list[FieldError] = []
    until = start + (
        duration_micros(body["until"], "until", errors) if "until" in body else _DEFAULT_UNTIL
    )
    if errors:
        raise ValidationFailed(
            f"{errors[0].param}: {errors[0].message}", param="until", errors=errors
        )
    profile = _profile(reader, journey.project_id, body)
    entrances = graph.entrances()
    wanted = body.get("entrance_id")
    if wanted is not None:
        entrances = [e for e in entrances if e.uuid == str(wanted) or str(e.id) == str(wanted)]
        if not entrances:
            raise NotFound(f"No entrance {wanted} in this journey.", param="entrance_id")
    entered_at: int | None = None
    entering: dict[str, Any] = {}
    entrance: Step | None = None
    for fact in events:
        for e in entrances:
            if (
                e.data.get("trigger") == "event"
                and e.data.get("event_name") == fact.name
                and event_passes(e.data.get("rule"), profile, fact, fact.created_at)
            ):
                entrance, entered_at = e, fact.created_at
                entering = {
                    "name": fact.name,
                    "data": dict(fact.data),
                    "created_at": fact.created_at,
                }
                break
        if entrance is not None:
            break
    if entrance is None:
        others = [e for e in entrances if e.data.get("trigger") != "event"]
        if others:
            entrance, entered_at = others[0], start
    if entrance is None or entered_at is None:
        return {"entered": False, "path": [], "messages": [], "events": [], "updates": []}
    path: list[dict[str, Any]] = [
        {
            "step_uuid": entrance.uuid,
            "type": "entrance",
            "entered_at": iso(entered_at),
            "completed_at": iso(entered_at),
            "outcome": "entered",
        }
    ]
    messages: list[dict[str, Any]] = []
    emitted: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    sent_at: list[int] = []
    holdout = in_holdout(journey.id, profile.id, graph.settings.holdout_percent)
    clock = entered_at
    step = graph.steps.get(entrance.child() or "")
    arrived = clock
    resumed: str | None = None
    for _ in range(len(graph.steps) * 4 + 10):
        if step is None or clock > until:
            break
        row = {"step_uuid": step.uuid, "type": step.type, "entered_at": iso(arrived)}
        cap = graph.settings.frequency_cap
        ctx = Context(
            project_id=journey.project_id,
            journey_id=journey.id,
            entrance_id=0,
            profile=profile,
            arrived_at=arrived,
            timezone=tz,
            event=entering,
            settings=graph.settings,
            holdout=holdout,
            events=[f for f in events if f.created_at <= clock],
            sent_count=sum(1 for t in sent_at if cap and t >= clock - cap[1]),
            resumed=resumed,
        )
        decision = decide(step, ctx, clock)
        resumed = None
        if decision.failed is not None:
            path.append(
                {**row, "completed_at": iso(clock), "outcome": "failed", "reason": decision.failed}
            )
            break
        if decision.hold_until is not None:
            clock = max(clock + 1, decision.hold_until)
            continue
        if decision.wait is not None:
            hit = next(
                (
                    f
                    for f in events
                    if arrived <= f.created_at < decision.wait.timeout_at
                    and decision.wait.event_name is not None
                    and wait_matches(decision.wait, entering, profile, f, f.created_at)
                ),
                None,
            )
            if hit is not None:
                clock, resumed = hit.created_at, "yes"
            else:
                clock, resumed = decision.wait.timeout_at, "no"
            continue
        ended = False
        for effect in decision.effects:
            if isinstance(effect, Send):
                messages.append(
                    {"campaign_id": effect.campaign_id, "step_uuid": step.uuid, "at": iso(clock)}
                )
                sent_at.append(clock)
            elif isinstance(effect, Emit):
                emitted.append({"name": effect.name, "data": dict(effect.data), "at": iso(clock)})
            elif isinstance(effect, UpdateTraits):
                updates.append({"data": dict(effect.data), "at": iso(clock)})
            elif isinstance(effect, ExitEntrance | LinkTo):
                ended = True
        path.append({**row, "completed_at": iso(clock), "outcome": decision.outcome})
        if ended:
            break
        step = graph.steps.get(decision.next or "")
        arrived = clock
    return {
        "entered": True,
        "entered_at": iso(entered_at),
        "path": path,
        "messages": messages,
        "events": emitted,
        "updates": updates,
    }
